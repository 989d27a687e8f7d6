//! The build, through `POST /build`: BuildKit (see [`super::buildkit`]), which fetches
//! the context and the Dockerfile over its session, or the classic builder (API
//! `version=1`), which has no session and gets the context as a streamed tar body, and
//! registry credentials for private base images through `X-Registry-Config`.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{BuildImageOptions, BuilderVersion, TagImageOptions};
use futures_util::StreamExt as _;

use super::buildkit::{
    self, BuildkitBuild, BuildkitError, RegistryCredentials, SyncedDir, SyncedDirs, CONTEXT_DIR,
};
use super::context::PreparedContext;
use super::{Engine, ImageStore, LineBuffer};
use crate::ecr::RegistryAuth;
use crate::inputs::BuildSettings;
use crate::platform::Platform;
use crate::progress::{Guard, Progress};
use crate::publish::Compression;

/// A failed build, with what the log reader needs: the daemon's message and, when it can
/// be told, the Dockerfile line.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{message}")]
    Dockerfile {
        message: String,
        dockerfile: PathBuf,
        line: Option<u32>,
    },
    #[error("sending the build context failed: {0}")]
    Context(String),
    #[error("the Docker daemon failed the build: {0}")]
    Engine(String),
}

/// What the build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// Local image ID (`sha256:` of the config).
    pub image_id: String,
    /// Uncompressed size as the daemon reports it.
    pub size_bytes: i64,
    /// BuildKit's step counts (`None` for the classic builder, which does not say).
    pub cache: Option<CacheStats>,
    /// The image's platform, from its config (`None` when it names no known one).
    pub platform: Option<Platform>,
    /// BuildKit's warnings about the Dockerfile (its lint checks), with their line.
    pub warnings: Vec<crate::engine::buildkit::BuildWarning>,
    /// The base images, by digest where known, for the provenance.
    pub bases: Vec<super::bases::ResolvedBase>,
}

/// How many build steps BuildKit found in its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub cached_steps: usize,
    pub steps: usize,
}

/// The builder a run uses, once `auto` is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuilderKind {
    Classic,
    Buildkit,
}

/// Everything a build needs, borrowed from the run.
#[derive(Debug)]
pub struct BuildRequest<'a> {
    pub settings: &'a BuildSettings,
    pub dockerfile: PathBuf,
    /// Full references (`registry/repository:tag`) to tag the result with.
    pub references: &'a [String],
    /// Credentials for pulling private base images from the ECR registry.
    pub registry_auth: Option<&'a RegistryAuth>,
    pub builder: BuilderKind,
    /// Secret values by id (BuildKit only).
    pub secrets: &'a [(String, Vec<u8>)],
    /// Images to reuse cache from (BuildKit only).
    pub cache_from: &'a [String],
    /// How layers are compressed: on the containerd store, BuildKit compresses them as
    /// it exports the image, so this goes to its exporter.
    pub compression: Compression,
    pub output: BuildOutput<'a>,
}

/// Where the build's output goes.
#[derive(Debug, Clone, Copy)]
pub enum BuildOutput<'a> {
    /// A log group of its own, with workflow commands stopped while it prints.
    Group,
    /// Builds running side by side: every line prefixed with `[label] `, inside the
    /// group and the command stop that the caller holds around them all.
    Prefixed(&'a str),
}

impl BuildOutput<'_> {
    /// Opens the group and stops commands, as this output needs. Dropped in field
    /// order: commands resume before the group ends, so `::endgroup::` is obeyed.
    fn open(self, progress: &dyn Progress, title: &str) -> (Option<Guard>, Option<Guard>) {
        match self {
            Self::Group => {
                let group = progress.group(title);
                (Some(progress.untrusted()), Some(group))
            }
            Self::Prefixed(_) => (None, None),
        }
    }

    fn line(self, progress: &dyn Progress, line: &str) {
        match self {
            Self::Group => progress.line(line),
            Self::Prefixed(label) => progress.line(&format!("[{label}] {line}")),
        }
    }
}

/// Builds the image, streaming the daemon's output to `progress`, then tags it with every
/// reference.
pub async fn build(
    engine: &Engine,
    context: PreparedContext,
    request: &BuildRequest<'_>,
    progress: &dyn Progress,
) -> Result<Built, BuildError> {
    let (image_id, cache, warnings, bases) = match request.builder {
        BuilderKind::Classic => {
            let image_id = classic(engine, context, request, progress).await?;
            let text = std::fs::read_to_string(&request.dockerfile).unwrap_or_default();
            let bases = crate::engine::buildkit::pulled_images(&text)
                .into_iter()
                .map(|image| (image, None))
                .collect();
            (image_id, None, Vec::new(), bases)
        }
        BuilderKind::Buildkit => {
            let outcome = buildkit(engine, context, request, progress).await?;
            let cache = CacheStats {
                cached_steps: outcome.cached_steps,
                steps: outcome.steps,
            };
            (
                Some(outcome.image_id),
                Some(cache),
                outcome.warnings,
                outcome.bases,
            )
        }
    };
    let mut built = finish(engine, image_id, request).await?;
    built.cache = cache;
    built.warnings = warnings;
    built.bases = super::bases::resolve(engine, bases).await;
    Ok(built)
}

/// BuildKit, with a session that answers registry credentials and secrets.
async fn buildkit(
    engine: &Engine,
    context: PreparedContext,
    request: &BuildRequest<'_>,
    progress: &dyn Progress,
) -> Result<crate::engine::buildkit::BuildkitOutcome, BuildError> {
    let settings = request.settings;
    let dockerfile_text = std::fs::read_to_string(&request.dockerfile).ok();
    let dockerfile_name = context
        .dockerfile_path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let options = BuildkitBuild {
        dockerfile: &dockerfile_name,
        dockerfile_text: dockerfile_text.as_deref(),
        tags: request.references,
        build_args: &settings.build_args,
        labels: &settings.labels,
        target: settings.target.as_deref(),
        platform: settings.platform.as_deref(),
        pull: settings.pull,
        no_cache: settings.no_cache,
        cache_from: request.cache_from,
        registry_auth: request.registry_auth.map(|auth| RegistryCredentials {
            host: &auth.registry,
            username: &auth.username,
            password: auth.password.expose(),
        }),
        secrets: request.secrets,
        // The classic store keeps layers uncompressed: the direct push compresses them.
        exporter_compression: (engine.store == ImageStore::Containerd)
            .then_some(request.compression),
    };
    let dirs = SyncedDirs {
        context: SyncedDir::context(context.context_dir(), context.matcher()),
        dockerfile: SyncedDir::dockerfile(context.dockerfile_path()),
    };
    tracing::info!(
        "build context {}: sent over the BuildKit session (FileSync), .dockerignore applied",
        context.context_dir().display()
    );
    let result = {
        let output = request.output;
        let _open = output.open(progress, "Build (BuildKit)");
        buildkit::build(
            &engine.daemon,
            &options,
            dirs,
            engine.stall_timeout,
            |line| {
                output.line(progress, line);
            },
        )
        .await
    };
    let outcome = result.map_err(|err| match err {
        BuildkitError::Failed { message, line, .. } => BuildError::Dockerfile {
            message,
            dockerfile: request.dockerfile.clone(),
            line,
        },
        BuildkitError::Context(message) => BuildError::Context(message),
        BuildkitError::Daemon(message) => BuildError::Engine(message),
    })?;
    let sent = outcome.sent.get(CONTEXT_DIR).copied().unwrap_or_default();
    #[allow(clippy::cast_precision_loss)]
    let seconds = sent.millis as f64 / 1000.0;
    tracing::info!(
        "build context sent over the session: {} file(s) of {} bytes asked for by the \
         daemon, {} entries listed, in {seconds:.1} s",
        sent.files,
        sent.bytes,
        sent.entries
    );
    Ok(outcome)
}

/// The classic builder (API `version=1`); returns the image ID it reported.
async fn classic(
    engine: &Engine,
    context: PreparedContext,
    request: &BuildRequest<'_>,
    progress: &dyn Progress,
) -> Result<Option<String>, BuildError> {
    let settings = request.settings;
    let dockerfile_text = std::fs::read_to_string(&request.dockerfile).unwrap_or_default();
    let instruction_lines = instruction_lines(&dockerfile_text);
    let options = BuildImageOptions {
        dockerfile: context.dockerfile_name().to_string(),
        t: request.references.first().cloned(),
        nocache: settings.no_cache,
        pull: settings.pull.then(|| "1".to_string()),
        rm: true,
        forcerm: true,
        buildargs: Some(settings.build_args.clone().into_iter().collect()),
        labels: Some(settings.labels.clone().into_iter().collect()),
        platform: settings.platform.clone().unwrap_or_default(),
        target: settings.target.clone().unwrap_or_default(),
        version: BuilderVersion::BuilderV1,
        ..Default::default()
    };
    let credentials = request.registry_auth.map(|auth| {
        HashMap::from([(
            auth.registry.clone(),
            DockerCredentials {
                username: Some(auth.username.clone()),
                password: Some(auth.password.expose().to_string()),
                serveraddress: Some(auth.registry.clone()),
                ..Default::default()
            },
        )])
    });

    tracing::info!(
        "build context {}: sent as a tar request body (the classic builder has no session)",
        context.context_dir().display()
    );
    // Watched until the first output: the daemon takes the context, then starts (an
    // answer that never starts is a hung daemon). Not after it: the classic builder sends
    // nothing while a `RUN` step is quiet (a `RUN sleep 20` left its stream silent for
    // 20 s against dockerd 26), so no silence there means a stall.
    let watchdog = engine.stall_timeout.watchdog();
    let (body, walker) = context.stream();
    let body = bollard::body_try_stream(watchdog.outgoing(body));
    let docker = super::long_call(&engine.docker);
    // Fused: when the first poll already ended it, the chain below polls it once more.
    let mut stream = docker.build_image(options, credentials, Some(body)).fuse();
    let first = watchdog.guard(stream.next()).await.map_err(|stalled| {
        BuildError::Engine(format!(
            "the Docker daemon at {} took no more of the build context and started no build \
             for {}: it seems hung; check it (`docker info`, its log), or raise {}",
            engine.host,
            crate::network::stall::human(stalled.limit),
            crate::env::STALL_TIMEOUT
        ))
    })?;
    let mut items = futures_util::stream::iter(first).chain(stream);

    let mut image_id = None;
    let mut last_step: Option<usize> = None;
    let mut failure = None;
    {
        let output = request.output;
        let _open = output.open(progress, "Build");
        let mut lines = LineBuffer::default();
        while let Some(item) = items.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream.as_deref() {
                        for line in lines.push(text.as_bytes()) {
                            let line = String::from_utf8_lossy(&line);
                            if let Some(step) = parse_step(&line) {
                                last_step = Some(step);
                            }
                            output.line(progress, &line);
                        }
                    }
                    if let Some(status) = info.status.as_deref() {
                        // Pull progress bars would flood the log; keep the milestones.
                        if info
                            .progress_detail
                            .as_ref()
                            .is_none_or(|p| p.total.is_none())
                        {
                            let id = info
                                .id
                                .as_deref()
                                .map(|id| format!("{id}: "))
                                .unwrap_or_default();
                            output.line(progress, &format!("{id}{status}"));
                        }
                    }
                    if let Some(id) = info.aux.as_ref().and_then(|aux| aux.id.clone()) {
                        image_id = Some(id);
                    }
                }
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        if let Some(rest) = lines.finish() {
            output.line(progress, &String::from_utf8_lossy(&rest));
        }
    }
    // Drop the stream first: it owns the request body, which the walker is feeding.
    drop(items);
    let walk_result = walker.await;

    if let Some(err) = failure {
        // A context that failed mid-walk is the real cause of the HTTP error it made.
        if let Ok(Err(context_error)) = walk_result {
            return Err(BuildError::Context(context_error.to_string()));
        }
        return Err(classify(err, request, &instruction_lines, last_step));
    }
    match walk_result {
        Ok(Ok(stats)) => tracing::debug!(?stats, "build context sent"),
        Ok(Err(err)) => return Err(BuildError::Context(err.to_string())),
        Err(join) => return Err(BuildError::Context(join.to_string())),
    }
    Ok(image_id)
}

/// Tags the image with every reference (BuildKit has, the classic builder only the
/// first) and reads its ID and size.
async fn finish(
    engine: &Engine,
    image_id: Option<String>,
    request: &BuildRequest<'_>,
) -> Result<Built, BuildError> {
    let reference = request.references.first().cloned().unwrap_or_default();
    let inspect = engine
        .docker
        .inspect_image(image_id.as_deref().unwrap_or(&reference))
        .await
        .map_err(|e| {
            BuildError::Engine(format!(
                "cannot inspect the built image: {}",
                crate::error_chain(&e)
            ))
        })?;
    let image_id = inspect.id.unwrap_or_default();
    for reference in request.references.iter().skip(1) {
        let (repo, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        engine
            .docker
            .tag_image(
                &image_id,
                Some(TagImageOptions {
                    repo: Some(repo.to_string()),
                    tag: Some(tag.to_string()),
                }),
            )
            .await
            .map_err(|e| {
                BuildError::Engine(format!(
                    "cannot tag the image as {reference}: {}",
                    crate::error_chain(&e)
                ))
            })?;
    }
    let platform = Platform::from_parts(
        inspect.os.as_deref().unwrap_or_default(),
        inspect.architecture.as_deref().unwrap_or_default(),
        inspect.variant.as_deref(),
    );
    Ok(Built {
        image_id,
        size_bytes: inspect.size.unwrap_or_default(),
        cache: None,
        platform,
        warnings: Vec::new(),
        bases: Vec::new(),
    })
}

/// Sorts a daemon error into a Dockerfile problem (with its line when known) or an engine
/// problem.
fn classify(
    err: bollard::errors::Error,
    request: &BuildRequest<'_>,
    instruction_lines: &[u32],
    last_step: Option<usize>,
) -> BuildError {
    let (message, from_step) = match err {
        // A failed step arrives in the progress stream.
        bollard::errors::Error::DockerStreamError { error } => (error, true),
        // Parse errors and bad options arrive as an HTTP error before any output.
        bollard::errors::Error::DockerResponseServerError { message, .. } => (message, false),
        other => return BuildError::Engine(crate::error_chain(&other)),
    };
    let line = super::dockerfile_line(&message).or_else(|| {
        from_step
            .then_some(last_step)
            .flatten()
            .and_then(|step| instruction_lines.get(step.checked_sub(1)?).copied())
    });
    let looks_like_dockerfile =
        from_step || message.to_ascii_lowercase().contains("dockerfile") || line.is_some();
    if looks_like_dockerfile {
        BuildError::Dockerfile {
            message,
            dockerfile: request.dockerfile.clone(),
            line,
        }
    } else {
        BuildError::Engine(message)
    }
}

/// `Step 3/7 : RUN make` gives 3.
fn parse_step(line: &str) -> Option<usize> {
    let rest = line.strip_prefix("Step ")?;
    let (number, _) = rest.split_once('/')?;
    number.parse().ok()
}

/// The 1-based line on which each instruction of a Dockerfile starts, in order, so the
/// classic builder's `Step N` maps to a line. Comments, blank lines and continuation
/// lines do not start instructions.
pub fn instruction_lines(dockerfile: &str) -> Vec<u32> {
    let mut starts = Vec::new();
    let mut continued = false;
    for (index, line) in dockerfile.lines().enumerate() {
        let trimmed = line.trim();
        let comment_or_blank = trimmed.is_empty() || trimmed.starts_with('#');
        if !continued && !comment_or_blank {
            starts.push(u32::try_from(index + 1).unwrap_or(u32::MAX));
        }
        if !comment_or_blank {
            continued = trimmed.ends_with('\\');
        }
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Instructions are found past comments, blank lines and `\` continuations, so Step N
    /// points at the right line.
    #[test]
    fn instruction_lines_skip_comments_and_continuations() {
        let text = "# syntax\nFROM a\n\nRUN one \\\n  two \\\n  three\n# note\nCOPY . .\n";
        assert_eq!(instruction_lines(text), [2, 4, 8]);
    }

    /// A build's own output opens a group and stops workflow commands inside it, and
    /// ends them in the other order, so `::endgroup::` is obeyed; builds side by side
    /// open nothing (their caller holds both) and prefix each line with their label.
    /// Every line goes to the sink given.
    #[test]
    fn build_output_goes_through_the_sink() {
        let sink = crate::progress::Recorder::default();
        {
            let _open = BuildOutput::Group.open(&sink, "Build");
            BuildOutput::Group.line(&sink, "#1 [internal] load build definition");
        }
        {
            let _open = BuildOutput::Prefixed("linux/arm64").open(&sink, "Build");
            BuildOutput::Prefixed("linux/arm64").line(&sink, "Step 1/2 : FROM a");
        }
        assert_eq!(
            sink.events(),
            [
                "group Build",
                "untrusted",
                "#1 [internal] load build definition",
                "end untrusted",
                "end group",
                "[linux/arm64] Step 1/2 : FROM a",
            ]
        );
    }

    /// Step numbers are read from the classic builder's output.
    #[test]
    fn step_numbers_are_parsed() {
        assert_eq!(parse_step("Step 3/7 : RUN make"), Some(3));
        assert_eq!(parse_step("Removing intermediate container"), None);
    }
}
