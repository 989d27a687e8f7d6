//! One image built across matrix legs (`build-platforms`): each leg builds its share of
//! `platforms`, pushes each image manifest by digest, and records it in the repository;
//! the leg that finds every platform recorded puts the index under every tag.
//!
//! A record is a tiny OCI artifact (image-spec 1.1: an `artifactType`, the empty JSON
//! object as config and layer) under a tag derived from the build and the platform,
//! `ebp-leg-<build>-<platform>`, whose annotations carry the platform image's descriptor,
//! the run attempt and the runner. Tags that are new in every build work in `IMMUTABLE`
//! repositories too, and every leg can compute every other leg's record tag, so the
//! records are read in one `BatchGetImage`, with no listing. Once the index is put, the
//! records are deleted by digest (`BatchDeleteImage`): nothing is left behind but the
//! platform manifests the index names.
//!
//! The index is deterministic (platforms in `platforms` order, no timestamps), so two
//! legs that both see the set complete put the same bytes, and an immutable tag already
//! at that digest is success.

use std::time::{Duration, Instant};

use sha2::Digest as _;

use super::index::{Child, Index};
use super::manifest::PushedManifest;
use crate::ecr::Ecr;
use crate::env::GitHubContext;
use crate::inputs::{InputError, Inputs, Platform};
use crate::registry::{Registry, OCI_MANIFEST};
use crate::supply::{EMPTY_JSON, EMPTY_MEDIA_TYPE};

/// What a record is, for anyone listing the repository.
pub const RECORD_ARTIFACT_TYPE: &str = "application/vnd.ecr-build-push.leg.v1+json";
/// The prefix of the record's annotations.
const ANNOTATION: &str = "io.github.ecr-build-push.leg";
/// How long a leg that finds the set incomplete reads the records again: ECR's API can
/// miss an image for seconds after its push (docker/github-builder#30 waits 5 s for ECR
/// hosts), and the record of a leg that finished just before this one must be seen. Twice
/// that: long enough for the lag, short enough that a leg which finishes first does not
/// keep its runner waiting for the others (the last leg assembles).
pub const RECORD_WAIT: Duration = Duration::from_secs(10);

/// A build shared by matrix legs: which one, and this leg's part in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBuild {
    /// 16 hex digits of the sha256 of the repository, run ID, job and tags: the same in
    /// every leg of one build and in its re-runs, different for any other build.
    pub id: String,
    pub run_id: String,
    /// `GITHUB_RUN_ATTEMPT`: 2 and up in "Re-run failed jobs".
    pub attempt: u32,
    /// `RUNNER_NAME (RUNNER_ARCH)`, for the summary of the leg that assembles.
    pub runner: String,
    /// The whole image, in `platforms` order.
    pub platforms: Vec<Platform>,
    /// This leg's share.
    pub share: Vec<Platform>,
}

impl SharedBuild {
    /// The shared build `inputs` ask for (`build-platforms`), or `None`. Its identity
    /// comes from the runner's `GITHUB_RUN_ID` and `GITHUB_JOB`.
    pub fn of(inputs: &Inputs, github: &GitHubContext) -> Result<Option<Self>, InputError> {
        if inputs.build_platforms.is_empty() {
            return Ok(None);
        }
        let share = inputs
            .build_platforms
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let Some(run_id) = github.run_id.clone() else {
            return Err(InputError::invalid(
                "build-platforms",
                &share,
                "the legs of a shared build find each other by the workflow run: \
                 `GITHUB_RUN_ID` is unset (a runner sets it; set it, and `GITHUB_JOB`, by \
                 hand to the same values in every leg when running elsewhere)",
            ));
        };
        let job = github.job.clone().unwrap_or_default();
        let attempt = match github.run_attempt.as_deref() {
            None => 1,
            Some(text) => text.parse().map_err(|_| {
                InputError::invalid(
                    "build-platforms",
                    &share,
                    format!("`GITHUB_RUN_ATTEMPT` is `{text}`, not a whole number"),
                )
            })?,
        };
        let mut hash = sha2::Sha256::new();
        for part in [
            inputs.registry_id.as_deref().unwrap_or_default(),
            &inputs.repository,
            &run_id,
            &job,
        ]
        .into_iter()
        .chain(inputs.tags.iter().map(String::as_str))
        {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let id = hex(&hash.finalize()[..8]);
        let runner = match (&github.runner_name, &github.runner_arch) {
            (Some(name), Some(arch)) => format!("{name} ({arch})"),
            (Some(name), None) => name.clone(),
            (None, Some(arch)) => format!("a runner ({arch})"),
            (None, None) => "a runner".to_string(),
        };
        Ok(Some(Self {
            id,
            run_id,
            attempt,
            runner,
            platforms: inputs.platforms.clone(),
            share: inputs.build_platforms.clone(),
        }))
    }

    /// The tag of `platform`'s record: `ebp-leg-<build>-<os>-<arch>[-<variant>]`.
    pub fn record_tag(&self, platform: &Platform) -> String {
        format!("ebp-leg-{}-{}", self.id, platform.slug())
    }

    fn record_tags(&self) -> Vec<String> {
        self.platforms.iter().map(|p| self.record_tag(p)).collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, b| {
        let _ = write!(text, "{b:02x}");
        text
    })
}

/// One leg's record of one platform's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub child: Child,
    pub attempt: u32,
    pub runner: String,
}

impl Record {
    /// The record as an OCI artifact manifest. Deterministic: the same record, the
    /// same bytes.
    pub fn manifest(&self, build: &SharedBuild) -> PushedManifest {
        let empty = serde_json::json!({
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": super::export::sha256_digest(EMPTY_JSON),
            "size": EMPTY_JSON.len(),
        });
        let key = |name: &str| format!("{ANNOTATION}.{name}");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": RECORD_ARTIFACT_TYPE,
            "config": empty,
            "layers": [empty],
            "annotations": {
                key("build"): build.id,
                key("run"): build.run_id,
                key("attempt"): self.attempt.to_string(),
                key("runner"): self.runner,
                key("platform"): self.child.platform.to_string(),
                key("image.digest"): self.child.digest,
                key("image.mediaType"): self.child.media_type,
                key("image.size"): self.child.size.to_string(),
            },
        });
        PushedManifest::new(OCI_MANIFEST, manifest.to_string().into_bytes().into())
    }

    /// The record in `manifest`, if it is one of build `id`'s.
    pub fn parse(manifest: &str, id: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(manifest).ok()?;
        if value["artifactType"] != RECORD_ARTIFACT_TYPE {
            return None;
        }
        let notes = &value["annotations"];
        let get = |name: &str| notes[format!("{ANNOTATION}.{name}")].as_str();
        if get("build")? != id {
            return None;
        }
        Some(Self {
            child: Child {
                platform: Platform::parse(get("platform")?).ok()?,
                digest: get("image.digest")?.to_string(),
                media_type: get("image.mediaType")?.to_string(),
                size: get("image.size")?.parse().ok()?,
            },
            attempt: get("attempt")?.parse().ok()?,
            runner: get("runner")?.to_string(),
        })
    }
}

/// A record as found in the repository: the record, and the digest of its manifest.
#[derive(Debug, Clone)]
struct Found {
    record: Record,
    digest: String,
}

/// What the records show once this leg's are written.
#[derive(Debug, Clone)]
pub enum LegOutcome {
    /// Every platform is recorded: the index, put under every tag, each platform's
    /// record (in `platforms` order), and the digests of the records this leg wrote
    /// (which ECR's API may not list yet, so they are removed by what this leg knows).
    Assembled {
        index: Index,
        records: Vec<Record>,
        written: Vec<String>,
    },
    /// Platforms no leg has recorded yet, left to the legs that build them.
    Waiting { missing: Vec<Platform> },
}

/// Where the records live, and how a leg reaches them.
#[derive(Debug)]
pub struct Records<'a> {
    pub reg: &'a Registry,
    pub ecr: &'a Ecr,
    pub repository: &'a str,
    pub registry_id: Option<&'a str>,
    pub build: &'a SharedBuild,
}

impl Records<'_> {
    /// Records this leg's `children` (one per platform of its share), then reads every
    /// platform's record, again for up to [`RECORD_WAIT`] while some are missing.
    pub async fn record_and_gather(
        &self,
        children: &[Child],
        on_line: &mut (dyn FnMut(&str) + Send),
    ) -> anyhow::Result<LegOutcome> {
        let mut found = self.read().await?;
        self.ensure_empty_blob().await?;
        let mut own = Vec::new();
        let mut written = Vec::new();
        for child in children {
            let record = Record {
                child: child.clone(),
                attempt: self.build.attempt,
                runner: self.build.runner.clone(),
            };
            if self.write(&record, &found).await? {
                written.push(record.manifest(self.build).digest);
            }
            on_line(&format!(
                "{}: recorded {} for the index ({})",
                child.platform,
                child.digest,
                self.build.record_tag(&child.platform)
            ));
            own.push(record);
        }
        let started = Instant::now();
        let mut delay = Duration::from_millis(500);
        loop {
            let (records, missing) = complete_set(&self.build.platforms, &own, &found);
            if missing.is_empty() {
                let children: Vec<Child> = records.iter().map(|r| r.child.clone()).collect();
                return Ok(LegOutcome::Assembled {
                    index: Index::of(&children),
                    records,
                    written,
                });
            }
            if started.elapsed() >= RECORD_WAIT {
                return Ok(LegOutcome::Waiting { missing });
            }
            tokio::time::sleep(delay.min(RECORD_WAIT.saturating_sub(started.elapsed()))).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            found = self.read().await?;
        }
    }

    /// The records the repository shows now, one per platform at most.
    async fn read(&self) -> anyhow::Result<Vec<Found>> {
        let images = self
            .ecr
            .images_by_tag(self.repository, self.registry_id, &self.build.record_tags())
            .await?;
        Ok(images
            .into_iter()
            .filter_map(|(_, digest, manifest)| {
                Some(Found {
                    record: Record::parse(&manifest, &self.build.id)?,
                    digest,
                })
            })
            .collect())
    }

    /// Puts `record` under its tag. A record of the same platform from this attempt
    /// with another image is a duplicated matrix entry: an error naming both. One from
    /// an earlier attempt ("Re-run failed jobs") is replaced: deleted first, as its tag
    /// cannot move in an `IMMUTABLE` repository. Whether it was written (not when the
    /// same image is recorded already).
    async fn write(&self, record: &Record, found: &[Found]) -> anyhow::Result<bool> {
        let platform = &record.child.platform;
        let tag = self.build.record_tag(platform);
        if let Some(old) = found.iter().find(|f| &f.record.child.platform == platform) {
            if old.record.child.digest == record.child.digest {
                return Ok(false);
            }
            if old.record.attempt == record.attempt {
                anyhow::bail!(
                    "{platform} is built twice in this run: {} by {} and {} by {} (here); \
                     give each platform to one matrix leg in `build-platforms`",
                    old.record.child.digest,
                    old.record.runner,
                    record.child.digest,
                    record.runner
                );
            }
            tracing::info!(
                "{platform}: replacing the record of attempt {} ({}) with this attempt's",
                old.record.attempt,
                old.record.child.digest
            );
            self.ecr
                .delete_images(
                    self.repository,
                    self.registry_id,
                    std::slice::from_ref(&old.digest),
                )
                .await?;
        }
        let manifest = record.manifest(self.build);
        self.reg
            .with_retry("putting a leg's record", || {
                self.reg
                    .put_manifest(&tag, &manifest.media_type, manifest.bytes.clone())
            })
            .await
            .map_err(|(failure, _)| {
                anyhow::anyhow!(
                    "recording {platform} for the index under tag `{tag}` failed: {}",
                    failure.describe()
                )
            })?;
        Ok(true)
    }

    /// The empty JSON blob every record names, uploaded once.
    async fn ensure_empty_blob(&self) -> anyhow::Result<()> {
        let digest = super::export::sha256_digest(EMPTY_JSON);
        let bytes = bytes::Bytes::from_static(EMPTY_JSON);
        self.reg
            .upload_small_blob(&digest, &bytes)
            .await
            .map_err(|failure| {
                anyhow::anyhow!(
                    "uploading the empty blob {digest} for the records failed: {}",
                    failure.describe()
                )
            })
    }

    /// Deletes every record of the build once its index is put: those the API lists,
    /// and `written` (this leg's, which it may not list yet). A failure leaves records
    /// behind, which is worth a warning, not a failed run.
    pub async fn remove_all(&self, written: &[String]) -> anyhow::Result<usize> {
        let mut digests: Vec<String> = self.read().await?.into_iter().map(|f| f.digest).collect();
        for digest in written {
            if !digests.contains(digest) {
                digests.push(digest.clone());
            }
        }
        self.ecr
            .delete_images(self.repository, self.registry_id, &digests)
            .await?;
        Ok(digests.len())
    }
}

/// Every platform's record, in `platforms` order, this leg's own first (they may not
/// be visible yet), and the platforms that have none.
fn complete_set(
    platforms: &[Platform],
    own: &[Record],
    found: &[Found],
) -> (Vec<Record>, Vec<Platform>) {
    let mut records = Vec::new();
    let mut missing = Vec::new();
    for platform in platforms {
        let record = own
            .iter()
            .chain(found.iter().map(|f| &f.record))
            .find(|r| &r.child.platform == platform);
        match record {
            Some(record) => records.push(record.clone()),
            None => missing.push(platform.clone()),
        }
    }
    (records, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build() -> SharedBuild {
        SharedBuild {
            id: "0123456789abcdef".into(),
            run_id: "42".into(),
            attempt: 1,
            runner: "arm-runner (ARM64)".into(),
            platforms: vec![
                Platform::parse("linux/amd64").unwrap(),
                Platform::parse("linux/arm64").unwrap(),
            ],
            share: vec![Platform::parse("linux/arm64").unwrap()],
        }
    }

    fn record() -> Record {
        Record {
            child: Child {
                platform: Platform::parse("linux/arm64").unwrap(),
                digest: format!("sha256:{}", "a".repeat(64)),
                media_type: crate::registry::MANIFEST_V2.into(),
                size: 1234,
            },
            attempt: 1,
            runner: "arm-runner (ARM64)".into(),
        }
    }

    /// A record reads back as written, its bytes are the same every time (two legs
    /// compare records by digest), and another build's record is not this build's.
    #[test]
    fn a_record_round_trips_and_is_deterministic() {
        let build = build();
        let manifest = record().manifest(&build);
        assert_eq!(manifest, record().manifest(&build));
        let text = manifest.text();
        assert_eq!(Record::parse(&text, &build.id), Some(record()));
        assert_eq!(Record::parse(&text, "fedcba9876543210"), None);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["artifactType"], RECORD_ARTIFACT_TYPE);
        assert_eq!(value["config"]["mediaType"], EMPTY_MEDIA_TYPE);
        assert_eq!(
            value["config"]["digest"],
            // sha256 of `{}`, the empty descriptor's digest in image-spec 1.1.
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    /// Record tags are valid tags (at most 128 characters of `[A-Za-z0-9_.-]`), one per
    /// platform, and differ between builds.
    #[test]
    fn record_tags_are_valid_and_per_build() {
        let build = build();
        let tag = build.record_tag(&Platform::parse("linux/arm/v7").unwrap());
        assert_eq!(tag, "ebp-leg-0123456789abcdef-linux-arm-v7");
        assert!(tag.len() <= 128);
        assert!(tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
        let other = SharedBuild {
            id: "fedcba9876543210".into(),
            ..build.clone()
        };
        assert_ne!(
            other.record_tag(&build.platforms[0]),
            build.record_tag(&build.platforms[0])
        );
    }

    /// The set is complete when every platform of `platforms` has a record, this leg's
    /// own counting before they are visible; the index lists them in `platforms` order.
    #[test]
    fn the_set_is_complete_only_with_every_platform() {
        let build = build();
        let own = vec![record()];
        let (_, missing) = complete_set(&build.platforms, &own, &[]);
        assert_eq!(missing, vec![Platform::parse("linux/amd64").unwrap()]);
        let amd = Found {
            record: Record {
                child: Child {
                    platform: Platform::parse("linux/amd64").unwrap(),
                    ..record().child
                },
                ..record()
            },
            digest: "sha256:r".into(),
        };
        let (records, missing) = complete_set(&build.platforms, &own, &[amd]);
        assert_eq!(records.len(), 2);
        assert!(missing.is_empty());
        assert_eq!(records[0].child.platform.to_string(), "linux/amd64");
    }
}
