//! The referrers of an image as ECR's API lists them (`ListImageReferrers`, November
//! 2025): what confirms that the provenance and signatures attached to a pushed manifest
//! are there, as `DescribeImages` confirms the manifest itself.

use anyhow::Context as _;
use aws_sdk_ecr::types::SubjectIdentifier;

use super::{api_error, Ecr};

/// A referrer as ECR lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    pub digest: String,
    pub artifact_type: Option<String>,
}

impl Ecr {
    /// Every referrer of the image `subject` in `name`, all pages.
    pub async fn referrers(
        &self,
        name: &str,
        registry_id: Option<&str>,
        subject: &str,
    ) -> anyhow::Result<Vec<Referrer>> {
        let subject_id = SubjectIdentifier::builder()
            .image_digest(subject)
            .build()
            .context("invalid subject digest")?;
        let mut found = Vec::new();
        let mut next = None;
        loop {
            let page = self
                .client
                .list_image_referrers()
                .repository_name(name)
                .set_registry_id(registry_id.map(ToString::to_string))
                .subject_id(subject_id.clone())
                .set_next_token(next)
                .send()
                .await
                .map_err(api_error)
                .with_context(|| {
                    format!(
                        "cannot list the referrers of {subject} in `{name}` \
                         (ecr:ListImageReferrers)"
                    )
                })?;
            found.extend(page.referrers().iter().map(|r| Referrer {
                digest: r.digest().to_string(),
                artifact_type: r.artifact_type().map(ToString::to_string),
            }));
            next = page.next_token().map(ToString::to_string);
            if next.is_none() {
                return Ok(found);
            }
        }
    }
}
