//! A multi-platform build: a [`BuildSet`] of per-platform BuildKit builds that become one
//! image index.
//!
//! The Engine API's `/build` takes one platform per build, so the set runs one build per
//! platform, each on its engine (`platform-hosts`, else `DOCKER_HOST`), all at once:
//! builds on different engines are independent, and builds on one engine share its
//! BuildKit, which runs concurrent solves side by side and shares their common steps
//! and base pulls (buildx, too, hands every platform to one BuildKit at once). Each build
//! is tagged locally with its platform in the tag, so the images do not collide in the
//! engine's store. BuildKit sets `TARGETPLATFORM`, `TARGETOS`, `TARGETARCH`,
//! `TARGETVARIANT` and `BUILDPLATFORM` from the build's `platform` option itself.
//!
//! The push is the direct one on both image stores (the classic store cannot hold a
//! multi-platform image): each platform's image as its own manifest, by digest and
//! untagged, then one index under every tag ([`crate::publish::index`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::ecr::{Ecr, RegistryAuth};
use crate::engine::build::{BuildOutput, BuildRequest, BuilderKind};
use crate::engine::platform::{self, Execution};
use crate::engine::{self as docker_engine, context, Engine};
use crate::env::DockerEnv;
use crate::inputs::{InputError, Inputs, Platform, PushEngine};
use crate::publish::index::{self, Child};
use crate::registry::RetryPolicy;
use crate::report::{Outcome, PlatformRow, Report};
use crate::runner::Runner;

/// One platform of the set and the engine that builds it.
#[derive(Debug, Clone)]
struct Member {
    platform: Platform,
    engine: Engine,
    /// `DOCKER_HOST` when the platform has no host of its own.
    own_host: bool,
    execution: Execution,
}

impl Member {
    /// `unix:///… (Docker 28.5.2, linux/amd64): emulated by QEMU (qemu-aarch64)`
    fn engine_label(&self) -> String {
        format!(
            "{} (Docker {}){}",
            self.engine.host,
            self.engine.version,
            match self.execution {
                Execution::Native => String::new(),
                _ => format!(", {}", short_execution(&self.execution)),
            }
        )
    }
}

fn short_execution(execution: &Execution) -> String {
    match execution {
        Execution::Native => "native".into(),
        Execution::Emulated { handler } => format!("QEMU ({handler})"),
        Execution::NoEmulator { .. } => "no emulator".into(),
        Execution::Unknown => "not native".into(),
    }
}

/// Per-platform builds that become one index: two or more platforms, each with the
/// engine that builds it, every engine reached.
#[derive(Debug, Clone)]
pub struct BuildSet {
    members: Vec<Member>,
}

/// What the set needs from the run, borrowed.
pub struct SetRun<'a> {
    pub inputs: &'a Inputs,
    pub ecr: &'a Ecr,
    pub auth: &'a RegistryAuth,
    pub runner: &'a Runner,
    pub retry: RetryPolicy,
    pub dockerfile: PathBuf,
    pub secrets: &'a [(String, Vec<u8>)],
    pub cache_from: &'a [String],
    /// Images whose layers ours may share (previous image, cache sources, bases).
    pub reuse_from: Vec<String>,
    /// How the registry is reached (proxy, trust roots, `registry-endpoint`).
    pub network: &'a crate::network::Network,
    /// Where the direct push spools compressed layers (`TMPDIR`).
    pub spool_dir: PathBuf,
    /// ECR's `BLOB_MOUNTING` setting, read once per run.
    pub mounting: crate::registry::Mounting,
    /// Requested tags that exist where they are immutable ([`crate::repository::check_present`]).
    pub present: &'a [crate::repository::PresentTag],
}

impl std::fmt::Debug for SetRun<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetRun")
            .field("dockerfile", &self.dockerfile)
            .field("cache_from", &self.cache_from)
            .field("reuse_from", &self.reuse_from)
            .finish_non_exhaustive()
    }
}

/// One platform's built image.
#[derive(Debug, Clone)]
struct Built {
    image_id: String,
    build_time: Duration,
}

impl BuildSet {
    /// The set for `inputs.platforms`, or `None` for one platform or none (a single
    /// image). Every `platform-hosts` engine is reached now, concurrently, so an
    /// unreachable one fails before anything is built or changed in AWS.
    pub async fn connect(
        inputs: &Inputs,
        docker: &DockerEnv,
        main: &Engine,
    ) -> anyhow::Result<Option<Self>> {
        if inputs.platforms.len() < 2 {
            return Ok(None);
        }
        if inputs.push && inputs.push_engine == PushEngine::Daemon {
            anyhow::bail!(InputError::invalid(
                "push-engine",
                "daemon",
                "a multi-platform image is pushed directly (the daemon's pusher cannot push \
                 an image by digest, and the classic store cannot hold an index); use \
                 `push-engine: auto` or `direct`",
            ));
        }
        let hosts = inputs.platform_hosts.iter().map(|entry| async move {
            let env = DockerEnv {
                host: Some(entry.host.clone()),
                ..docker.clone()
            };
            Engine::connect(&env).await.map_err(|err| {
                anyhow::Error::new(InputError::invalid(
                    "platform-hosts",
                    &format!("{}={}", entry.platform, entry.host),
                    format!(
                        "the engine for {} cannot be reached: {err:#}",
                        entry.platform
                    ),
                ))
            })
        });
        let connected = futures_util::future::try_join_all(hosts).await?;
        let mut members = Vec::with_capacity(inputs.platforms.len());
        for wanted in &inputs.platforms {
            let own = inputs
                .platform_hosts
                .iter()
                .zip(&connected)
                .find(|(entry, _)| &entry.platform == wanted)
                .map(|(_, engine)| engine.clone());
            let own_host = own.is_some();
            let engine = own.unwrap_or_else(|| main.clone());
            let engine_platform = platform::engine_platform(&engine.docker).await;
            let execution = Execution::of(
                wanted,
                engine_platform.as_ref(),
                &engine.host,
                std::path::Path::new(platform::BINFMT_MISC_DIR),
            );
            members.push(Member {
                platform: wanted.clone(),
                engine,
                own_host,
                execution,
            });
        }
        Ok(Some(Self { members }))
    }

    pub fn platforms(&self) -> Vec<Platform> {
        self.members.iter().map(|m| m.platform.clone()).collect()
    }

    /// Checks that every engine builds with BuildKit (the platform build options and
    /// `TARGET*` arguments are BuildKit's) and says, before building, where each
    /// platform builds and which ones the engines cannot run natively.
    pub async fn check_engines(
        &self,
        main_builder: BuilderKind,
        runner: &Runner,
    ) -> anyhow::Result<()> {
        if main_builder != BuilderKind::Buildkit && self.members.iter().any(|m| !m.own_host) {
            anyhow::bail!(InputError::invalid(
                "platforms",
                &self.describe_platforms(),
                "a multi-platform build needs BuildKit, and this run uses the classic builder \
                 (see the log line above for why)",
            ));
        }
        for member in self.members.iter().filter(|m| m.own_host) {
            let usable = docker_engine::buildkit::supports_buildkit(&member.engine.daemon).await;
            if !usable {
                anyhow::bail!(InputError::invalid(
                    "platform-hosts",
                    &format!("{}={}", member.platform, member.engine.host),
                    "that engine does not build with BuildKit (Docker 23 or later has it on \
                     by default)",
                ));
            }
        }
        for member in &self.members {
            let line = format!(
                "{}: builds on {} (Docker {}): {}",
                member.platform,
                member.engine.host,
                member.engine.version,
                member.execution.describe()
            );
            if let Execution::NoEmulator { .. } = member.execution {
                runner.warning(&line);
            } else {
                tracing::info!("{line}");
            }
        }
        Ok(())
    }

    fn describe_platforms(&self) -> String {
        self.platforms()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Builds every platform at once, then (when pushing) pushes each image by digest
    /// and the index under every tag, and confirms the index with ECR.
    pub async fn run(&self, run: &SetRun<'_>, report: &mut Report) -> anyhow::Result<()> {
        let started = Instant::now();
        let built = self.build_all(run, report).await?;
        report.build_time = Some(started.elapsed());
        report.builder = Some(BuilderKind::Buildkit);
        report.image_id = String::new();
        report.platforms = self
            .members
            .iter()
            .zip(&built)
            .map(|(member, built)| PlatformRow {
                platform: member.platform.clone(),
                digest: None,
                compressed_bytes: None,
                build_time: Some(built.build_time),
                engine: member.engine_label(),
            })
            .collect();
        tracing::info!(
            "built {} platforms in {:.1}s",
            built.len(),
            started.elapsed().as_secs_f64()
        );
        if run.inputs.push {
            self.push_all(run, &built, report).await?;
        }
        Ok(())
    }

    async fn build_all(&self, run: &SetRun<'_>, report: &Report) -> anyhow::Result<Vec<Built>> {
        let inputs = run.inputs;
        let _group = run.runner.group(&format!(
            "Build {} (BuildKit, {} builds side by side)",
            self.describe_platforms(),
            self.members.len()
        ));
        let _untrusted = run.runner.untrusted();
        let builds = self.members.iter().map(|member| {
            let label = member.platform.to_string();
            let references: Vec<String> = report
                .references
                .iter()
                .map(|reference| platform_reference(reference, &member.platform.slug()))
                .collect();
            let mut settings = inputs.build.clone();
            settings.platform = Some(label.clone());
            async move {
                let prepared = context::prepare(&inputs.build.context, &run.dockerfile)
                    .map_err(|e| anyhow::anyhow!("{}: the build context: {e}", member.platform))?;
                let request = BuildRequest {
                    settings: &settings,
                    dockerfile: run.dockerfile.clone(),
                    references: &references,
                    registry_auth: Some(run.auth),
                    builder: BuilderKind::Buildkit,
                    secrets: run.secrets,
                    cache_from: run.cache_from,
                    compression: inputs.compression,
                    output: BuildOutput::Prefixed(&label),
                };
                let started = Instant::now();
                let built =
                    docker_engine::build::build(&member.engine, prepared, &request, run.runner)
                        .await
                        .with_context(|| format!("the {} build failed", member.platform))?;
                let build_time = started.elapsed();
                if let Some(got) = built.platform.as_ref().filter(|got| {
                    got.os != member.platform.os || got.architecture != member.platform.architecture
                }) {
                    run.runner.warning(&format!(
                        "the {} build produced a {got} image (its final stage names another \
                         platform); the index lists it as {}",
                        member.platform, member.platform
                    ));
                }
                crate::annotate_build_warnings(run.runner, &run.dockerfile, &built.warnings);
                eprintln!(
                    "[{label}] built {} in {:.1}s on {}",
                    built.image_id,
                    build_time.as_secs_f64(),
                    member.engine_label()
                );
                Ok::<_, anyhow::Error>(Built {
                    image_id: built.image_id,
                    build_time,
                })
            }
        });
        futures_util::future::try_join_all(builds).await
    }

    async fn push_all(
        &self,
        run: &SetRun<'_>,
        built: &[Built],
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let inputs = run.inputs;
        let started = Instant::now();
        let repository_ref = report.repository_uri();
        let group = run.runner.group(&format!(
            "Push {repository_ref} ({} platforms, direct)",
            built.len()
        ));
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let reg = std::sync::Arc::new(crate::registry::Registry::connect(
            &run.auth.login(),
            &inputs.repository,
            run.retry,
            run.network,
        )?);
        let proofs = crate::publish::verify::Proofs::default();
        let pushes = self.members.iter().zip(built).map(|(member, built)| {
            let options = crate::publish::DirectOptions {
                reuse_from: run.reuse_from.clone(),
                // The platforms compress side by side: share the cores.
                threads: (cores / self.members.len()).max(1),
                compression: inputs.compression,
                spool_dir: run.spool_dir.clone(),
                network: run.network.clone(),
                mounting: run.mounting,
                proofs: proofs.clone(),
            };
            let reg = std::sync::Arc::clone(&reg);
            async move {
                let label = member.platform.to_string();
                let mut on_line = |line: &str| eprintln!("[{label}] {line}");
                // Each platform's image goes by digest, untagged: the index names it.
                let image = crate::publish::upload_image(
                    &member.engine,
                    &built.image_id,
                    &reg,
                    &options,
                    &mut on_line,
                )
                .await
                .with_context(|| format!("pushing the {} image failed", member.platform))?;
                crate::publish::manifest::put(
                    &reg,
                    std::slice::from_ref(&image.manifest.digest),
                    &image.manifest,
                    &mut on_line,
                )
                .await
                .with_context(|| format!("pushing the {} manifest failed", member.platform))?;
                Ok::<_, anyhow::Error>((
                    Child::of(member.platform.clone(), &image.manifest),
                    image.stats,
                ))
            }
        });
        let children = futures_util::future::try_join_all(pushes).await?;
        let mut blobs = crate::publish::BlobStats::default();
        for (row, (child, stats)) in report.platforms.iter_mut().zip(&children) {
            row.digest = Some(child.digest.clone());
            row.compressed_bytes = Some(stats.compressed_bytes);
            blobs += *stats;
        }
        report.blobs = Some(blobs);
        let children: Vec<Child> = children.into_iter().map(|(child, _)| child).collect();
        let index = index::Index::of(&children);
        let keep = crate::repository::check_present(run.present, &index.manifest.digest)?;
        let put = index
            .put(
                &reg,
                &crate::repository::without(&inputs.tags, &keep),
                |line| {
                    eprintln!("{line}");
                },
            )
            .await?;
        drop(group);
        crate::confirm(run.ecr, inputs, run.runner, report, &put.digest).await?;
        tracing::info!(
            "pushed {} tag(s) at index {} ({}, {} platforms) in {:.1}s (direct)",
            inputs.tags.len(),
            put.digest,
            put.kind.media_type(),
            children.len(),
            started.elapsed().as_secs_f64()
        );
        report.outcome = Outcome::Pushed;
        report.push_engine = Some("direct");
        report.push_time = Some(started.elapsed());
        Ok(())
    }

    /// `on-tag-exists: skip`: whether the existing image at `digest` is an index of
    /// exactly this set's platforms; its entries when it is.
    pub async fn existing_index(
        &self,
        ecr: &Ecr,
        inputs: &Inputs,
        digest: &str,
    ) -> anyhow::Result<Option<Vec<(Platform, String)>>> {
        let manifest = ecr
            .image_manifest(&inputs.repository, inputs.registry_id.as_deref(), digest)
            .await?;
        let Some(entries) = manifest.as_deref().and_then(index::entries) else {
            return Ok(None);
        };
        let mut found: Vec<&Platform> = entries.iter().map(|(p, _)| p).collect();
        let mut wanted: Vec<&Platform> = self.members.iter().map(|m| &m.platform).collect();
        found.sort();
        wanted.sort();
        Ok((found == wanted).then_some(entries))
    }
}

/// The rows of a skipped run: the existing index's entries, in input order.
pub fn skipped_rows(platforms: &[Platform], entries: &[(Platform, String)]) -> Vec<PlatformRow> {
    platforms
        .iter()
        .map(|platform| PlatformRow {
            platform: platform.clone(),
            digest: entries
                .iter()
                .find(|(p, _)| p == platform)
                .map(|(_, d)| d.clone()),
            compressed_bytes: None,
            build_time: None,
            engine: "already in ECR".into(),
        })
        .collect()
}

/// Docker's limit on a tag's length.
const MAX_TAG_LENGTH: usize = 128;

/// The local reference a platform's build is tagged with: `<reference>-<platform slug>`,
/// its tag cut (with a hash of the whole tag, so two long tags still differ) where it
/// would pass Docker's 128 characters.
fn platform_reference(reference: &str, slug: &str) -> String {
    use sha2::Digest as _;
    let (name, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
    if tag.len() + 1 + slug.len() <= MAX_TAG_LENGTH {
        return format!("{name}:{tag}-{slug}");
    }
    let hash = sha2::Sha256::digest(tag.as_bytes());
    let hash = hash.iter().take(4).fold(String::new(), |mut text, b| {
        use std::fmt::Write as _;
        let _ = write!(text, "{b:02x}");
        text
    });
    // tag prefix, '-', 8 hex, '-', slug
    let keep = MAX_TAG_LENGTH.saturating_sub(slug.len() + hash.len() + 2);
    let cut = tag
        .char_indices()
        .map(|(i, _)| i)
        .take_while(|i| *i <= keep)
        .last()
        .unwrap_or(0);
    format!("{name}:{}-{hash}-{slug}", &tag[..cut.min(keep)])
}

#[cfg(test)]
mod local_tag_tests {
    use super::*;

    /// Regression: "per-platform local tags overflow Docker's 128 characters on long
    /// branch tags". A short tag gets the slug appended; a long one is cut, keeps a hash
    /// of the whole tag so two long tags differ, and stays within 128 characters.
    #[test]
    fn platform_tags_never_pass_128_characters() {
        let repo = "1.dkr.ecr.r.amazonaws.com/team/app";
        assert_eq!(
            platform_reference(&format!("{repo}:v1"), "linux-arm64"),
            format!("{repo}:v1-linux-arm64")
        );
        let long_a = format!("{repo}:{}", "a".repeat(128));
        let long_b = format!("{repo}:{}b", "a".repeat(127));
        let (a, b) = (
            platform_reference(&long_a, "linux-arm-v7"),
            platform_reference(&long_b, "linux-arm-v7"),
        );
        for reference in [&a, &b] {
            let tag = reference.rsplit_once(':').unwrap().1;
            assert!(tag.len() <= MAX_TAG_LENGTH, "{} > 128: {tag}", tag.len());
            assert!(tag.ends_with("-linux-arm-v7"), "{tag}");
        }
        assert_ne!(a, b);
    }
}
