//! What a run hands back: the step outputs (names as in `action.yml`) and the Markdown
//! job summary.

use std::fmt::Write as _;
use std::time::Duration;

use crate::ecr::Repository;
use crate::engine::build::{BuilderKind, CacheStats};
use crate::inputs::Inputs;
use crate::supply::AttachmentKind;
use supply::PROVENANCE;

/// The outputs that name the image under the tags: a leg of a shared build that did not
/// assemble the index leaves them out.
const IMAGE_OUTPUTS: [&str; 4] = [
    "image-uri",
    "image-digest",
    "image-uri-by-digest",
    "image-uris",
];

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Built with `push: false`.
    BuiltOnly,
    Pushed,
    /// Every tag already existed at one image (`on-tag-exists: skip`).
    Skipped,
    /// Pushed, and the scan gate failed: the image is in ECR, no outputs are written.
    ScanFailed,
    /// A leg of a shared build pushed its share by digest and left the index to the
    /// legs that build the platforms not recorded yet.
    SharePushed,
}

/// The result of a run, from which outputs and the summary are rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub registry: String,
    pub repository: String,
    /// Full references, one per tag, in input order.
    pub references: Vec<String>,
    pub outcome: Outcome,
    /// Manifest digest as ECR holds it; `None` for a build-only run.
    pub digest: Option<String>,
    pub image_id: String,
    /// Compressed size as ECR reports it, when pushed.
    pub pushed_size_bytes: Option<i64>,
    pub local_size_bytes: Option<i64>,
    pub repository_state: Option<Repository>,
    pub policies: Vec<(String, PolicyOutcome)>,
    pub build_time: Option<Duration>,
    pub push_time: Option<Duration>,
    pub builder: Option<BuilderKind>,
    pub cache: Option<CacheStats>,
    /// Which pusher sent the image: `direct`, `daemon`, `daemon (fallback)`, `direct
    /// (fallback)`, `daemon (blobs), direct (tags)` or `daemon (blobs and tag)`
    /// ([`crate::publish::route::Route`]).
    pub push_engine: Option<&'static str>,
    /// What the direct push's blobs cost (sent, already there, mounted), when it pushed.
    pub blobs: Option<crate::publish::BlobStats>,
    /// The scan gate's findings, with `scan: wait`.
    pub scan: Option<crate::gate::Gate>,
    /// A single-platform build's platform, from the image config.
    pub platform: Option<crate::inputs::Platform>,
    /// A multi-platform build: one row per platform, in input order.
    pub platforms: Vec<PlatformRow>,
    /// Tags ECR showed at another image after the push: not in the outputs.
    pub moved_tags: Vec<String>,
    /// A leg of a shared build (`build-platforms`): what became of the index.
    pub leg: Option<crate::publish::pipeline::Leg>,
    /// The provenance and signatures attached to the pushed manifests, and the ones the
    /// registry refused.
    pub attachments: crate::publish::attach::Attachments,
    /// `sign: kms`: the key, as given, for the summary's verify commands.
    pub signing_key: Option<String>,
    /// `sign: ecr`: the profiles ECR signed each pushed manifest with.
    pub ecr_signatures: Vec<crate::ecr::signing::ImageSignatures>,
    /// When the run started (seconds since the epoch), for the provenance.
    pub started_at: i64,
    /// With `also-push-to`: every registry, the primary first, pushed to or failed.
    pub targets: Vec<targets::TargetRow>,
}

/// One platform of a multi-platform build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformRow {
    pub platform: crate::inputs::Platform,
    /// Its image manifest's digest (pushed by digest, or found in the existing index).
    pub digest: Option<String>,
    pub compressed_bytes: Option<u64>,
    pub build_time: Option<Duration>,
    /// Which engine built it: `DOCKER_HOST` value, version, and how it ran the platform;
    /// or, for another leg's platform in a shared build, its runner.
    pub engine: String,
    /// Built (or, for a skipped run, found) by this run: the scan gate covers it, and
    /// `platform-digests` names it. Another leg's platform in the index is not.
    pub here: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyOutcome {
    Applied,
    Unchanged,
    /// Not applied: the repository is created on push, with the policies of the
    /// repository creation template with this prefix.
    FromTemplate(String),
}

impl Report {
    /// A report for a run that has built nothing yet.
    pub fn new(registry: &str, inputs: &Inputs) -> Self {
        let references = inputs
            .tags
            .iter()
            .map(|tag| format!("{registry}/{}:{tag}", inputs.repository))
            .collect();
        Self {
            registry: registry.to_string(),
            repository: inputs.repository.clone(),
            references,
            outcome: Outcome::BuiltOnly,
            digest: None,
            image_id: String::new(),
            pushed_size_bytes: None,
            local_size_bytes: None,
            repository_state: None,
            policies: Vec::new(),
            build_time: None,
            push_time: None,
            builder: None,
            cache: None,
            push_engine: None,
            blobs: None,
            platform: None,
            platforms: Vec::new(),
            scan: None,
            moved_tags: Vec::new(),
            leg: None,
            attachments: crate::publish::attach::Attachments::default(),
            signing_key: None,
            ecr_signatures: Vec::new(),
            started_at: crate::metadata::now(),
            targets: Vec::new(),
        }
    }

    /// `platform-digests`: platform to image manifest digest.
    pub fn platform_digests(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut map = serde_json::Map::new();
        if self.platforms.is_empty() {
            if let (Some(platform), Some(digest)) = (&self.platform, &self.digest) {
                map.insert(platform.to_string(), digest.clone().into());
            }
        }
        for row in self.platforms.iter().filter(|row| row.here) {
            if let Some(digest) = &row.digest {
                map.insert(row.platform.to_string(), digest.clone().into());
            }
        }
        map
    }

    pub fn repository_uri(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// Leaves `moved` (tags ECR shows at another image) out of the outputs; the warning
    /// to give, if any tag moved.
    pub fn leave_out_moved_tags(&mut self, moved: &[String]) -> Option<String> {
        if moved.is_empty() {
            return None;
        }
        self.moved_tags = moved.to_vec();
        let digest = self.digest.clone().unwrap_or_default();
        let first_moved = self.first_tag_moved();
        Some(format!(
            "tag(s) {} now point at another image: another run pushed them after this one. \
             This run's image is in ECR as {digest}; `image-uri` and `image-uris` leave those \
             tags out{}",
            moved.join(", "),
            if first_moved {
                ", and `image-uri` names the image by digest"
            } else {
                ""
            }
        ))
    }

    fn first_tag_moved(&self) -> bool {
        self.references
            .first()
            .is_some_and(|r| !self.confirmed_references().contains(&r))
    }

    /// The references ECR confirmed: every tag's, less the moved ones.
    pub fn confirmed_references(&self) -> Vec<&String> {
        self.references
            .iter()
            .filter(|r| {
                let tag = r.rsplit_once(':').map_or("", |(_, tag)| tag);
                !self.moved_tags.iter().any(|m| m == tag)
            })
            .collect()
    }

    /// The image manifests the scan gate covers. ECR scans image manifests, not an
    /// index: with several platforms, each platform's that this run built (a shared
    /// build's leg gates its own share).
    pub fn gated_digests(&self) -> Vec<String> {
        if self.platforms.is_empty() {
            self.digest.iter().cloned().collect()
        } else {
            self.platforms
                .iter()
                .filter(|row| row.here)
                .filter_map(|row| row.digest.clone())
                .collect()
        }
    }

    /// Outputs in `action.yml` order.
    pub fn outputs(&self) -> Vec<(&'static str, String)> {
        let by_digest = self
            .digest
            .as_ref()
            .map(|d| format!("{}@{d}", self.repository_uri()))
            .unwrap_or_default();
        // A skipped run's tags are in ECR too, pointing at the image it outputs.
        let pushed: Vec<&String> = match self.outcome {
            Outcome::Pushed | Outcome::Skipped | Outcome::ScanFailed => self.confirmed_references(),
            Outcome::BuiltOnly | Outcome::SharePushed => Vec::new(),
        };
        // The first tag's reference, unless ECR showed it at another image: then this
        // run's image by digest.
        let image_uri = match self.references.first() {
            Some(_) if self.first_tag_moved() => by_digest.clone(),
            first => first.cloned().unwrap_or_default(),
        };
        let mut outputs = vec![
            ("registry", self.registry.clone()),
            ("repository-uri", self.repository_uri()),
            ("image-uri", image_uri),
            ("image-digest", self.digest.clone().unwrap_or_default()),
            ("image-uri-by-digest", by_digest),
            (
                "image-uris",
                serde_json::to_string(&pushed).unwrap_or_else(|_| "[]".into()),
            ),
            ("image-id", self.image_id.clone()),
            (
                "platform-digests",
                serde_json::Value::Object(self.platform_digests()).to_string(),
            ),
            (
                "scan-findings",
                self.scan
                    .as_ref()
                    .map(crate::gate::Gate::findings_json)
                    .unwrap_or_default(),
            ),
            ("index-assembled", self.index_assembled().to_string()),
            ("provenance-digest", self.attached_digests(&PROVENANCE)),
            (
                "signature-digest",
                self.attached_digests(&[AttachmentKind::Signature, AttachmentKind::EcrSignature]),
            ),
            ("targets", self.targets_output()),
        ];
        // A leg that left the index to the others names no image: in a matrix, the
        // outputs of whichever leg ends last are the job's, and only the assembling leg
        // knows the index.
        if self.outcome == Outcome::SharePushed {
            outputs.retain(|(name, _)| !IMAGE_OUTPUTS.contains(name));
        }
        outputs
    }

    /// Whether this run put an image index under the tags: a multi-platform run, or
    /// the leg of a shared build that completed the set.
    pub fn index_assembled(&self) -> bool {
        match &self.leg {
            Some(leg) => leg.assembled,
            None => self.outcome == Outcome::Pushed && !self.platforms.is_empty(),
        }
    }

    /// The job summary: what was pushed, where, and with which repository settings.
    pub fn summary_markdown(&self) -> String {
        let mut md = String::new();
        let verb = match self.outcome {
            Outcome::Pushed => "Pushed",
            Outcome::BuiltOnly => "Built (not pushed)",
            Outcome::Skipped => "Already in ECR, not rebuilt",
            Outcome::ScanFailed if self.build_time.is_none() => {
                "Already in ECR, not rebuilt, and the scan gate failed for"
            }
            Outcome::ScanFailed => "Pushed, but the scan gate failed for",
            Outcome::SharePushed => "Pushed this leg's share of",
        };
        let _ = writeln!(md, "### {verb} `{}`\n", self.repository);
        if let Some(leg) = &self.leg {
            md.push_str(&leg_markdown(leg, &self.platforms));
        }
        md.push_str("| | |\n|---|---|\n");
        for reference in &self.references {
            let _ = writeln!(md, "| Image | `{reference}` |");
        }
        if let Some(digest) = &self.digest {
            let _ = writeln!(md, "| Digest | `{digest}` |");
            let _ = writeln!(md, "| By digest | `{}@{digest}` |", self.repository_uri());
        }
        if let Some(size) = self.pushed_size_bytes {
            let _ = writeln!(md, "| Size in ECR (compressed) | {} |", human_bytes(size));
        }
        if let Some(size) = self.local_size_bytes {
            let _ = writeln!(md, "| Size (uncompressed) | {} |", human_bytes(size));
        }
        if !self.image_id.is_empty() {
            let _ = writeln!(md, "| Image ID | `{}` |", self.image_id);
        }
        if let Some(build) = self.build_time {
            let _ = writeln!(md, "| Build time | {:.2} s |", build.as_secs_f64());
        }
        match (self.builder, self.cache) {
            (Some(BuilderKind::Buildkit), Some(cache)) => {
                let _ = writeln!(
                    md,
                    "| Builder | BuildKit: {} of {} steps cached |",
                    cache.cached_steps, cache.steps
                );
            }
            (Some(BuilderKind::Buildkit), None) => md.push_str("| Builder | BuildKit |\n"),
            (Some(BuilderKind::Classic), _) => md.push_str("| Builder | classic |\n"),
            (None, _) => {}
        }
        if let Some(push) = self.push_time {
            let engine = self.push_engine.unwrap_or("daemon");
            let _ = writeln!(md, "| Push time | {:.2} s |", push.as_secs_f64());
            let _ = writeln!(md, "| Push engine | {engine} |");
        }
        if let Some(blobs) = &self.blobs {
            let _ = writeln!(
                md,
                "| Blobs | {} uploaded, {} already in the repository, {} mounted from another \
                 repository, {} layer(s) reused without compressing |",
                human_bytes(i64::try_from(blobs.uploaded_bytes).unwrap_or(i64::MAX)),
                blobs.skipped_blobs,
                blobs.mounted_blobs,
                blobs.reused_layers
            );
        }
        if let Some(repo) = &self.repository_state {
            let created = match &repo.created_on_push {
                Some(prefix) => format!(
                    " (created on push by ECR from the repository creation template `{prefix}`)"
                ),
                None if repo.created => " (created by this run)".to_string(),
                None => String::new(),
            };
            let uri = if repo.uri.is_empty() {
                self.repository_uri()
            } else {
                repo.uri.clone()
            };
            let _ = writeln!(md, "| Repository | `{uri}`{created} |");
            let mutability = if repo.tag_mutability_exclusions.is_empty() {
                repo.tag_mutability.clone()
            } else {
                format!(
                    "{} (exclusions: {})",
                    repo.tag_mutability,
                    repo.exclusions_text()
                )
            };
            let _ = writeln!(md, "| Tag mutability | {mutability} |");
            if repo.is_created_on_push() {
                md.push_str("| Scan on push | as the registry's scanning configuration says |\n");
            } else {
                let _ = writeln!(md, "| Scan on push | {} |", repo.scan_on_push);
            }
            let _ = writeln!(md, "| Encryption | {} |", repo.encryption);
        }
        for (name, outcome) in &self.policies {
            let state = match outcome {
                PolicyOutcome::Applied => "applied".to_string(),
                PolicyOutcome::Unchanged => "unchanged".to_string(),
                PolicyOutcome::FromTemplate(prefix) => {
                    format!("not applied: the repository creation template `{prefix}`'s applies")
                }
            };
            let _ = writeln!(md, "| {name} | {state} |");
        }
        md.push('\n');
        if let Some(gate) = &self.scan {
            md.push_str(&gate.summary_markdown(&self.repository_uri()));
        }
        if !self.platforms.is_empty() {
            md.push_str(&self.platforms_markdown());
        }
        md.push_str(&self.targets_markdown());
        md.push_str(&self.supply_markdown());
        md
    }

    /// The multi-platform table: a row per platform.
    fn platforms_markdown(&self) -> String {
        let mut md = String::from(
            "| Platform | Digest | Size (compressed) | Build time | Engine |\n|---|---|---|---|---|\n",
        );
        for row in &self.platforms {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                row.platform,
                row.digest
                    .as_ref()
                    .map(|d| format!("`{d}`"))
                    .unwrap_or_default(),
                row.compressed_bytes
                    .map(|b| human_bytes(i64::try_from(b).unwrap_or(i64::MAX)))
                    .unwrap_or_default(),
                row.build_time
                    .map(|t| format!("{:.2} s", t.as_secs_f64()))
                    .unwrap_or_default(),
                row.engine
            );
        }
        md.push('\n');
        md
    }
}

/// What a leg of a shared build did, above the table.
fn leg_markdown(leg: &crate::publish::pipeline::Leg, rows: &[PlatformRow]) -> String {
    let here: Vec<String> = rows
        .iter()
        .filter(|r| r.here)
        .map(|r| r.platform.to_string())
        .collect();
    let mut md = format!(
        "One leg of a shared build (`ebp-leg-{}`): this leg built {}. ",
        leg.build_id,
        here.join(", ")
    );
    if leg.assembled {
        let _ = write!(
            md,
            "Every platform was recorded, and this leg put the index under every tag \
             ({} record(s) removed).\n\n",
            leg.records_removed
        );
    } else {
        let missing: Vec<String> = leg.missing.iter().map(ToString::to_string).collect();
        let _ = write!(
            md,
            "Not recorded yet: {}; the leg that builds the last of them puts the index \
             under the tags below.\n\n",
            missing.join(", ")
        );
    }
    md
}

fn human_bytes(bytes: i64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let value = bytes as f64;
    if value >= 1e9 {
        format!("{:.2} GB", value / 1e9)
    } else if value >= 1e6 {
        format!("{:.1} MB", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} kB", value / 1e3)
    } else {
        format!("{bytes} B")
    }
}

mod supply;
pub mod targets;
#[cfg(test)]
mod tests;
