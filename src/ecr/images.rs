//! Images already in ECR: which of the requested tags exist (before the build, for
//! `on-tag-exists`), and the confirmation of a pushed digest (after the push).

use anyhow::Context as _;
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::types::ImageIdentifier;

use std::time::{Duration, Instant};

use super::{api_error, Ecr, ImageDetail};
use crate::registry::rules;

/// Manifest types asked for when reading a manifest back, newest first.
const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// A requested tag that exists in ECR, and the digest it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingTag {
    pub tag: String,
    pub digest: String,
}

impl Ecr {
    /// Which of `tags` exist in the repository, and where they point. One lookup per tag,
    /// concurrently: `DescribeImages` fails as a whole when any one tag is missing.
    pub async fn existing_tags(
        &self,
        name: &str,
        registry_id: Option<&str>,
        tags: &[String],
    ) -> anyhow::Result<Vec<ExistingTag>> {
        let lookups = tags.iter().map(|tag| async move {
            let result = self
                .client
                .describe_images()
                .repository_name(name)
                .set_registry_id(registry_id.map(ToString::to_string))
                .image_ids(ImageIdentifier::builder().image_tag(tag).build())
                .send()
                .await;
            match result {
                Ok(response) => Ok(response
                    .image_details()
                    .first()
                    .and_then(|d| d.image_digest())
                    .map(|digest| ExistingTag {
                        tag: tag.clone(),
                        digest: digest.to_string(),
                    })),
                Err(err) if err.code() == Some("ImageNotFoundException") => Ok(None),
                Err(err) => Err(api_error(err))
                    .with_context(|| format!("cannot look up tag `{tag}` in `{name}`")),
            }
        });
        let found = futures_util::future::try_join_all(lookups).await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// The config digest (local image ID) of the image at `digest`, from its manifest;
    /// `None` for an index.
    pub async fn image_config_digest(
        &self,
        name: &str,
        registry_id: Option<&str>,
        digest: &str,
    ) -> anyhow::Result<Option<String>> {
        Ok(self
            .image_manifest(name, registry_id, digest)
            .await?
            .as_deref()
            .and_then(config_digest))
    }

    /// The manifest (or index) at `digest`, as ECR serves it.
    pub async fn image_manifest(
        &self,
        name: &str,
        registry_id: Option<&str>,
        digest: &str,
    ) -> anyhow::Result<Option<String>> {
        let response = self
            .client
            .batch_get_image()
            .repository_name(name)
            .set_registry_id(registry_id.map(ToString::to_string))
            .image_ids(ImageIdentifier::builder().image_digest(digest).build())
            .set_accepted_media_types(Some(MANIFEST_TYPES.map(String::from).to_vec()))
            .send()
            .await
            .map_err(api_error)
            .with_context(|| format!("cannot read the manifest of {digest} in `{name}`"))?;
        Ok(response
            .images()
            .first()
            .and_then(|image| image.image_manifest())
            .map(ToString::to_string))
    }

    /// The images under `tags` (those that exist), as ECR serves them: (tag, digest,
    /// manifest). One `BatchGetImage` for all: a missing tag is a failure entry in its
    /// answer, not an error.
    pub async fn images_by_tag(
        &self,
        name: &str,
        registry_id: Option<&str>,
        tags: &[String],
    ) -> anyhow::Result<Vec<(String, String, String)>> {
        let ids = tags
            .iter()
            .map(|tag| ImageIdentifier::builder().image_tag(tag).build())
            .collect();
        let response = self
            .client
            .batch_get_image()
            .repository_name(name)
            .set_registry_id(registry_id.map(ToString::to_string))
            .set_image_ids(Some(ids))
            .set_accepted_media_types(Some(MANIFEST_TYPES.map(String::from).to_vec()))
            .send()
            .await
            .map_err(api_error)
            .with_context(|| format!("cannot read tags {} in `{name}`", tags.join(", ")))?;
        Ok(response
            .images()
            .iter()
            .filter_map(|image| {
                let id = image.image_id()?;
                Some((
                    id.image_tag()?.to_string(),
                    id.image_digest()?.to_string(),
                    image.image_manifest()?.to_string(),
                ))
            })
            .collect())
    }

    /// Deletes the images at `digests` with every tag they have (`BatchDeleteImage`).
    /// One already gone is no failure; any other failure is returned, with its image.
    pub async fn delete_images(
        &self,
        name: &str,
        registry_id: Option<&str>,
        digests: &[String],
    ) -> anyhow::Result<()> {
        if digests.is_empty() {
            return Ok(());
        }
        let ids = digests
            .iter()
            .map(|digest| ImageIdentifier::builder().image_digest(digest).build())
            .collect();
        let response = self
            .client
            .batch_delete_image()
            .repository_name(name)
            .set_registry_id(registry_id.map(ToString::to_string))
            .set_image_ids(Some(ids))
            .send()
            .await
            .map_err(api_error)
            .with_context(|| format!("cannot delete {} in `{name}`", digests.join(", ")))?;
        let failed: Vec<String> = response
            .failures()
            .iter()
            .filter(|f| {
                f.failure_code()
                    .map(aws_sdk_ecr::types::ImageFailureCode::as_str)
                    != Some("ImageNotFound")
            })
            .map(|f| {
                format!(
                    "{}: {}",
                    f.image_id()
                        .and_then(|id| id.image_digest())
                        .unwrap_or_default(),
                    f.failure_reason().unwrap_or_default()
                )
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("ECR did not delete {} in `{name}`", failed.join("; "))
        }
    }

    /// Confirms that ECR holds the pushed `digest` and returns what it reports. A tag that
    /// points elsewhere by now (another run pushed the same tag meanwhile) is reported in
    /// `moved_tags`, not as an error: this run's image is in ECR under its digest.
    ///
    /// ECR is eventually consistent: right after a push, `DescribeImages` may not list the
    /// image, or not all its tags, for a few seconds (docker/github-builder#30). So a
    /// missing image, or a tag not found anywhere, is asked for again with backoff for up
    /// to [`rules::VISIBILITY_WAIT`]; the log says how long that took.
    pub async fn confirm_digest(
        &self,
        name: &str,
        registry_id: Option<&str>,
        tags: &[String],
        digest: &str,
    ) -> anyhow::Result<(ImageDetail, Vec<String>)> {
        confirm(
            name,
            tags,
            digest,
            || self.describe_digest(name, registry_id, digest),
            |missing| async move { self.existing_tags(name, registry_id, &missing).await },
        )
        .await
    }

    /// Whether ECR lists `digest` in `name` now, asked once (no waiting for it to show).
    pub async fn has_image(
        &self,
        name: &str,
        registry_id: Option<&str>,
        digest: &str,
    ) -> anyhow::Result<bool> {
        Ok(self
            .describe_digest(name, registry_id, digest)
            .await?
            .is_some())
    }

    /// `DescribeImages` of one digest; `None` when ECR does not list it.
    async fn describe_digest(
        &self,
        name: &str,
        registry_id: Option<&str>,
        digest: &str,
    ) -> anyhow::Result<Option<ImageDetail>> {
        let result = self
            .client
            .describe_images()
            .repository_name(name)
            .set_registry_id(registry_id.map(ToString::to_string))
            .image_ids(ImageIdentifier::builder().image_digest(digest).build())
            .send()
            .await;
        let response = match result {
            Ok(response) => response,
            Err(err) if err.code() == Some("ImageNotFoundException") => return Ok(None),
            Err(err) => {
                return Err(api_error(err))
                    .with_context(|| format!("cannot look up {digest} in `{name}`"))
            }
        };
        let Some(found) = response.image_details().first() else {
            return Ok(None);
        };
        let detail = ImageDetail {
            digest: found.image_digest().unwrap_or_default().to_string(),
            size_bytes: found.image_size_in_bytes(),
            tags: found.image_tags().to_vec(),
        };
        if detail.digest != digest {
            anyhow::bail!("ECR answered {} when asked for {digest}", detail.digest);
        }
        Ok(Some(detail))
    }
}

/// [`Ecr::confirm_digest`]'s loop, for either ECR ([`super::public`] too): `describe`
/// is `DescribeImages` of the digest, `existing` looks tags up one by one.
pub(super) async fn confirm<D, DF, E, EF>(
    name: &str,
    tags: &[String],
    digest: &str,
    describe: D,
    existing: E,
) -> anyhow::Result<(ImageDetail, Vec<String>)>
where
    D: Fn() -> DF,
    DF: std::future::Future<Output = anyhow::Result<Option<ImageDetail>>>,
    E: Fn(Vec<String>) -> EF,
    EF: std::future::Future<Output = anyhow::Result<Vec<ExistingTag>>>,
{
    let started = Instant::now();
    let mut wait = Duration::from_millis(250);
    let mut sleep = |late: bool| {
        let this = wait;
        wait = (wait * 2).min(Duration::from_secs(5));
        async move {
            if late {
                return false;
            }
            tokio::time::sleep(this).await;
            true
        }
    };
    loop {
        let late = started.elapsed() >= rules::VISIBILITY_WAIT;
        let Some(detail) = describe().await? else {
            if sleep(late).await {
                continue;
            }
            anyhow::bail!(
                "ECR has no image {digest} in `{name}` {:.0} s after the push",
                started.elapsed().as_secs_f64()
            );
        };
        let missing: Vec<String> = tags
            .iter()
            .filter(|tag| !detail.tags.contains(tag))
            .cloned()
            .collect();
        // A missing tag found at another image has moved; one found nowhere (or found
        // at this image by tag but not yet in its listing) is not visible yet.
        let found = existing(missing.clone()).await?;
        let moved: Vec<String> = found
            .into_iter()
            .filter(|tag| tag.digest != digest)
            .map(|tag| tag.tag)
            .collect();
        if moved.len() < missing.len() && sleep(late).await {
            continue;
        }
        if started.elapsed() >= Duration::from_secs(1) {
            tracing::info!(
                "ECR listed {digest} with its tags after {:.1} s (its API is eventually \
                 consistent)",
                started.elapsed().as_secs_f64()
            );
        }
        // Past the wait, a tag ECR still does not show is not confirmed: it is
        // reported with the moved ones, and left out of the outputs as they are.
        let unconfirmed = if late { missing } else { moved };
        return Ok((detail, unconfirmed));
    }
}

/// The `config.digest` of an image manifest; `None` for an index or unreadable JSON.
fn config_digest(manifest: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(manifest).ok()?;
    value["config"]["digest"].as_str().map(ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared confirmation loop waits for an image ECR does not list yet, then
    /// reports a tag found at another digest as moved, not as an error.
    #[tokio::test(start_paused = true)]
    async fn confirmation_waits_for_the_image_and_reports_moved_tags() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let tags = vec!["v1".to_string(), "latest".to_string()];
        let (detail, moved) = confirm(
            "app",
            &tags,
            "sha256:mine",
            || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    Ok((n > 0).then(|| ImageDetail {
                        digest: "sha256:mine".into(),
                        size_bytes: Some(1),
                        tags: vec!["v1".into()],
                    }))
                }
            },
            |missing| async move {
                assert_eq!(missing, ["latest"]);
                Ok(vec![ExistingTag {
                    tag: "latest".into(),
                    digest: "sha256:theirs".into(),
                }])
            },
        )
        .await
        .unwrap();
        assert_eq!(detail.digest, "sha256:mine");
        assert_eq!(moved, ["latest"]);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// The image ID of an existing image is its manifest's config digest.
    #[test]
    fn config_digest_is_read_from_image_manifests_only() {
        let manifest =
            r#"{"schemaVersion":2,"config":{"digest":"sha256:abc","size":1},"layers":[]}"#;
        assert_eq!(config_digest(manifest), Some("sha256:abc".into()));
        assert_eq!(config_digest(r#"{"schemaVersion":2,"manifests":[]}"#), None);
        assert_eq!(config_digest("not json"), None);
    }
}
