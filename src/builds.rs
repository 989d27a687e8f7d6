//! The build phase: a [`PlatformBuilds`] of one build per platform, each on its engine,
//! side by side. One platform (or none named: the engine's own) is the one-member case of
//! the same set, and the only one the classic builder can do.
//!
//! The Engine API's `/build` takes one platform per build, so the set runs one build per
//! platform, each on its engine (`platform-hosts`, else `DOCKER_HOST`), all at once:
//! builds on different engines are independent, and builds on one engine share its
//! BuildKit, which runs concurrent solves side by side and shares their common steps
//! and base pulls (buildx, too, hands every platform to one BuildKit at once). With two
//! or more, each build is tagged locally with its platform in the tag, so the images do
//! not collide in the engine's store. BuildKit sets `TARGETPLATFORM`, `TARGETOS`,
//! `TARGETARCH`, `TARGETVARIANT` and `BUILDPLATFORM` from the build's `platform` option.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::ecr::{Ecr, RegistryAuth};
use crate::engine::build::{self, BuildOutput, BuildRequest, BuilderKind};
use crate::engine::platform::{self, Execution};
use crate::engine::{buildkit, context, Engine};
use crate::env::DockerEnv;
use crate::inputs::{InputError, Inputs, Platform, PushEngine};
use crate::publish::index;
use crate::report::PlatformRow;
use crate::runner::Runner;

/// One platform of the set and the engine that builds it.
#[derive(Debug, Clone)]
struct Member {
    /// `None`: one build for the engine's own platform (no `platforms` input).
    platform: Option<Platform>,
    engine: Engine,
    /// `DOCKER_HOST` when the platform has no host of its own.
    own_host: bool,
    execution: Execution,
}

impl Member {
    /// The builder this build uses: the run's, except on a platform's own host, which
    /// builds with BuildKit (checked by [`PlatformBuilds::check_engines`]).
    fn builder(&self, main_builder: BuilderKind) -> BuilderKind {
        if self.own_host {
            BuilderKind::Buildkit
        } else {
            main_builder
        }
    }

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

    fn name(&self) -> String {
        self.platform
            .as_ref()
            .map_or_else(|| "the image".to_string(), ToString::to_string)
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

/// One build per platform, each with the engine that builds it, every engine reached.
#[derive(Debug, Clone)]
pub struct PlatformBuilds {
    members: Vec<Member>,
}

/// What the builds need from the run, borrowed.
pub struct BuildRun<'a> {
    pub inputs: &'a Inputs,
    pub builder: BuilderKind,
    pub auth: &'a RegistryAuth,
    pub runner: &'a Runner,
    pub dockerfile: PathBuf,
    pub secrets: &'a [(String, Vec<u8>)],
    pub cache_from: &'a [String],
    /// Full references (`registry/repository:tag`), one per tag.
    pub references: &'a [String],
}

impl std::fmt::Debug for BuildRun<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildRun")
            .field("dockerfile", &self.dockerfile)
            .field("cache_from", &self.cache_from)
            .finish_non_exhaustive()
    }
}

/// One platform's built image, on the engine that built it.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    /// The platform asked for; `None` for the engine's own.
    pub platform: Option<Platform>,
    pub engine: Engine,
    /// `host (Docker version), execution`, for the summary.
    pub engine_label: String,
    pub built: build::Built,
    pub build_time: Duration,
}

impl PlatformBuilds {
    /// The builds for `inputs.platforms` (one, for the main engine's own platform, when
    /// none is named). Every `platform-hosts` engine is reached now, concurrently, so an
    /// unreachable one fails before anything is built or changed in AWS.
    pub async fn connect(
        inputs: &Inputs,
        docker: &DockerEnv,
        main: &Engine,
    ) -> anyhow::Result<Self> {
        if inputs.platforms.len() > 1 && inputs.push && inputs.push_engine == PushEngine::Daemon {
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
        // A leg of a shared build builds its share (`build-platforms`) only.
        let wanted: Vec<Option<Platform>> = if !inputs.build_platforms.is_empty() {
            inputs.build_platforms.iter().cloned().map(Some).collect()
        } else if inputs.platforms.is_empty() {
            vec![None]
        } else {
            inputs.platforms.iter().cloned().map(Some).collect()
        };
        let mut members = Vec::with_capacity(wanted.len());
        for wanted in wanted {
            let own = inputs
                .platform_hosts
                .iter()
                .zip(&connected)
                .find(|(entry, _)| Some(&entry.platform) == wanted.as_ref())
                .map(|(_, engine)| engine.clone());
            let own_host = own.is_some();
            let engine = own.unwrap_or_else(|| main.clone());
            let execution = match &wanted {
                Some(wanted) => Execution::of(
                    wanted,
                    platform::engine_platform(&engine.docker).await.as_ref(),
                    &engine.host,
                    std::path::Path::new(platform::BINFMT_MISC_DIR),
                ),
                None => Execution::Native,
            };
            members.push(Member {
                platform: wanted,
                engine,
                own_host,
                execution,
            });
        }
        Ok(Self { members })
    }

    /// Two or more platforms: the images become one index.
    pub fn is_multi(&self) -> bool {
        self.members.len() > 1
    }

    /// Checks that every engine can do its build (several platforms need BuildKit: the
    /// platform build options and `TARGET*` arguments are BuildKit's) and says, before
    /// building, where each named platform builds and which ones the engines cannot run
    /// natively.
    pub async fn check_engines(
        &self,
        main_builder: BuilderKind,
        runner: &Runner,
    ) -> anyhow::Result<()> {
        if self.is_multi()
            && main_builder != BuilderKind::Buildkit
            && self.members.iter().any(|m| !m.own_host)
        {
            anyhow::bail!(InputError::invalid(
                "platforms",
                &self.describe_platforms(),
                "a multi-platform build needs BuildKit, and this run uses the classic builder \
                 (see the log line above for why)",
            ));
        }
        for member in self.members.iter().filter(|m| m.own_host) {
            let usable = buildkit::supports_buildkit(&member.engine.daemon).await;
            if !usable {
                anyhow::bail!(InputError::invalid(
                    "platform-hosts",
                    &format!("{}={}", member.name(), member.engine.host),
                    "that engine does not build with BuildKit (Docker 23 or later has it on \
                     by default)",
                ));
            }
        }
        for member in &self.members {
            let Some(platform) = &member.platform else {
                continue;
            };
            let line = format!(
                "{platform}: builds on {} (Docker {}): {}",
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
        self.members
            .iter()
            .map(Member::name)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Builds every platform at once. One build has a log group of its own; several
    /// share one, each line prefixed with its platform.
    pub async fn build(&self, run: &BuildRun<'_>) -> anyhow::Result<Vec<PlatformImage>> {
        let started = Instant::now();
        let shared_group = self.is_multi().then(|| {
            let group = run.runner.group(&format!(
                "Build {} (BuildKit, {} builds side by side)",
                self.describe_platforms(),
                self.members.len()
            ));
            (run.runner.untrusted(), group)
        });
        let builds = self
            .members
            .iter()
            .map(|member| self.build_one(run, member));
        let images = futures_util::future::try_join_all(builds).await?;
        // Commands resume, and the group ends, before the warnings are annotated.
        drop(shared_group);
        for image in &images {
            crate::annotate_build_warnings(run.runner, &run.dockerfile, &image.built.warnings);
        }
        if self.is_multi() {
            tracing::info!(
                "built {} platforms in {:.1}s",
                images.len(),
                started.elapsed().as_secs_f64()
            );
        } else {
            tracing::info!(
                "built {} in {:.1}s",
                images[0].built.image_id,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(images)
    }

    async fn build_one(
        &self,
        run: &BuildRun<'_>,
        member: &Member,
    ) -> anyhow::Result<PlatformImage> {
        let inputs = run.inputs;
        let label = member.name();
        let multi = self.is_multi();
        // A platform of an index (here, or across the legs of a shared build, which may
        // share an engine) is tagged locally with its platform in the tag, so that the
        // builds do not take each other's tags (on the containerd store, an image that
        // loses its last tag is gone).
        let part_of_an_index = inputs.platforms.len() > 1;
        let references: Vec<String> = match &member.platform {
            Some(platform) if part_of_an_index => run
                .references
                .iter()
                .map(|reference| platform_reference(reference, &platform.slug()))
                .collect(),
            _ => run.references.to_vec(),
        };
        let mut settings = inputs.build.clone();
        if let Some(platform) = &member.platform {
            settings.platform = Some(platform.to_string());
        }
        let prepared = context::prepare(&inputs.build.context, &run.dockerfile)
            .map_err(|e| anyhow::anyhow!("{label}: the build context: {e}"))?;
        let request = BuildRequest {
            settings: &settings,
            dockerfile: run.dockerfile.clone(),
            references: &references,
            registry_auth: Some(run.auth),
            builder: member.builder(run.builder),
            secrets: run.secrets,
            cache_from: run.cache_from,
            compression: inputs.compression,
            output: if multi {
                BuildOutput::Prefixed(&label)
            } else {
                BuildOutput::Group
            },
        };
        let started = Instant::now();
        let built = build::build(&member.engine, prepared, &request, run.runner).await;
        let built = if multi {
            built.with_context(|| format!("the {label} build failed"))?
        } else {
            built?
        };
        let build_time = started.elapsed();
        if let Some((wanted, got)) = member.platform.as_ref().zip(built.platform.as_ref()) {
            if got.os != wanted.os || got.architecture != wanted.architecture {
                run.runner.warning(&format!(
                    "the {wanted} build produced a {got} image (its final stage names another \
                     platform); {}",
                    if multi {
                        format!("the index lists it as {wanted}")
                    } else {
                        "it is pushed as it is".to_string()
                    }
                ));
            }
        }
        if multi {
            tracing::info!(
                "[{label}] built {} in {:.1}s on {}",
                built.image_id,
                build_time.as_secs_f64(),
                member.engine_label()
            );
        }
        Ok(PlatformImage {
            platform: member.platform.clone(),
            engine: member.engine.clone(),
            engine_label: member.engine_label(),
            built,
            build_time,
        })
    }
}

/// `on-tag-exists: skip` with several platforms (in this run, or across the legs of a
/// shared build): whether the existing image at `digest` is an index of exactly
/// `platforms`; its entries when it is.
pub async fn existing_index(
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
    // The whole image, also in a leg of a shared build that builds a share of it.
    let mut wanted: Vec<&Platform> = inputs.platforms.iter().collect();
    found.sort();
    wanted.sort();
    Ok((found == wanted).then_some(entries))
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
            here: true,
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
