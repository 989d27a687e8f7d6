//! BuildKit builds through the Engine API, with a session attached.
//!
//! bollard 0.21 cannot do this build: its `build_image` with `BuilderBuildKit` starts its
//! own session that serves registry credentials only (its secrets provider and server
//! enum are crate-private), its gRPC `Solve` path loads the whole context into memory, and
//! without its `buildkit` feature it has no `session` option and cannot decode the trace.
//! So this module makes the two requests itself, on their own connections:
//!
//! 1. `POST /session`, upgraded to `h2c` ([`session`]): the daemon becomes a gRPC client
//!    of ours, and we answer `FileSync/DiffCopy` with the build context and the
//!    Dockerfile's directory ([`filesync`]), `Auth/Credentials` for the ECR registry,
//!    `Secrets/GetSecret` for build secrets and `Health/Check`.
//! 2. `POST /build?version=2&remote=client-session&session=<id>` with an empty body, as
//!    the Docker CLI sent it before buildx: BuildKit fetches the context over the session
//!    (only the files it does not have, with `.dockerignore` applied by its Dockerfile
//!    frontend), so the daemon never stores a tar of it. The JSON answer ([`answer`])
//!    carries BuildKit's progress as base64 protobuf ([`progress`]), rendered as
//!    `--progress=plain` lines, and the image ID.
//!
//! Both go over the daemon's unix socket, plain TCP, or TLS with the client certificate
//! of `DOCKER_CERT_PATH` ([`daemon`]).
//!
//! No secret value or registry password is logged, put in an error or shown by `Debug`;
//! rendered lines have them replaced by `***` should a build step print one.

mod answer;
mod daemon;
mod dockerfile;
mod filesync;
mod progress;
mod session;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request};

use crate::network::stall::{StallTimeout, Watchdog};
use crate::publish::Compression;
use zeroize::Zeroizing;

pub use daemon::{DaemonAddress, TlsEndpoint};
pub use dockerfile::{base_images, pulled_images, DockerfileMap};
pub use filesync::{SentStats, SyncedDir, CONTEXT_DIR, DOCKERFILE_DIR};
pub use progress::{BuildWarning, FailedStep, ProgressRenderer};

/// The build argument that makes BuildKit embed inline cache metadata in the image, so a
/// later build on a fresh daemon can use the pushed image as `cache_from`.
pub const INLINE_CACHE_ARG: &str = "BUILDKIT_INLINE_CACHE";

/// Credentials for one registry, answered to BuildKit's `Credentials` for that host only.
#[derive(Clone, Copy)]
pub struct RegistryCredentials<'a> {
    /// `<account>.dkr.ecr.<region>.amazonaws.com`, no scheme.
    pub host: &'a str,
    pub username: &'a str,
    pub password: &'a str,
}

impl fmt::Debug for RegistryCredentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The directories a build's session lends the daemon.
#[derive(Debug, Clone)]
pub struct SyncedDirs {
    /// Served as `context`.
    pub context: SyncedDir,
    /// Served as `dockerfile`: the Dockerfile's own directory.
    pub dockerfile: SyncedDir,
}

/// Everything a BuildKit build needs, borrowed from the caller.
#[derive(Clone, Copy)]
pub struct BuildkitBuild<'a> {
    /// The `dockerfile` parameter: the Dockerfile's file name in its directory.
    pub dockerfile: &'a str,
    /// The Dockerfile's text, to find the line of a failed step (optional).
    pub dockerfile_text: Option<&'a str>,
    /// Full references to tag the image with (each sent as `t`).
    pub tags: &'a [String],
    pub build_args: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    pub target: Option<&'a str>,
    pub platform: Option<&'a str>,
    pub pull: bool,
    pub no_cache: bool,
    /// Image references to use as cache sources (inline cache).
    pub cache_from: &'a [String],
    pub registry_auth: Option<RegistryCredentials<'a>>,
    /// Build secrets by id, for `RUN --mount=type=secret,id=...`.
    pub secrets: &'a [(String, Vec<u8>)],
    /// The image exporter's layer compression (`outputs`), for the containerd store,
    /// where BuildKit compresses new layers as it exports them.
    pub exporter_compression: Option<Compression>,
}

impl fmt::Debug for BuildkitBuild<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret_ids: Vec<&str> = self.secrets.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("BuildkitBuild")
            .field("dockerfile", &self.dockerfile)
            .field("tags", &self.tags)
            .field("build_args", &self.build_args)
            .field("labels", &self.labels)
            .field("target", &self.target)
            .field("platform", &self.platform)
            .field("pull", &self.pull)
            .field("no_cache", &self.no_cache)
            .field("cache_from", &self.cache_from)
            .field("registry_auth", &self.registry_auth)
            .field("secret_ids", &secret_ids)
            .finish_non_exhaustive()
    }
}

/// What a successful build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildkitOutcome {
    /// Local image ID (`sha256:` of the config).
    pub image_id: String,
    /// Dockerfile steps that finished (`[stage n/total]` vertices, `FROM` included).
    pub steps: usize,
    /// Of those, the ones BuildKit took from its cache.
    pub cached_steps: usize,
    pub warnings: Vec<BuildWarning>,
    /// The `FROM` steps' images, with the digest BuildKit resolved when it says.
    pub bases: Vec<(String, Option<String>)>,
    /// What went over the session, by directory name ([`CONTEXT_DIR`], [`DOCKERFILE_DIR`]).
    pub sent: BTreeMap<String, SentStats>,
}

/// A failed BuildKit build.
#[derive(Debug, thiserror::Error)]
pub enum BuildkitError {
    /// BuildKit failed the build: a step, the Dockerfile, a base image. `line` is the
    /// Dockerfile line when BuildKit's progress or message tells it.
    #[error("{message}")]
    Failed {
        message: String,
        /// The failing step's name, e.g. `[build 3/4] RUN make`.
        step: Option<String>,
        line: Option<u32>,
    },
    /// The build context stream failed while it was being sent.
    #[error("sending the build context failed: {0}")]
    Context(String),
    /// The daemon could not be reached or refused the request.
    #[error("{0}")]
    Daemon(String),
}

/// How long the `/_ping` that decides `builder: auto` may take; a daemon that does not
/// answer it is taken as one without BuildKit (connecting has proved it answers).
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// BuildKit checks the session's health every 5 s (moby/buildkit `session/grpc.go`,
/// `defaultHealthCheckConfig`); a build's stall limit is never under three of those, so a
/// short `ECR_BUILD_PUSH_STALL_TIMEOUT` cannot fire between two checks of a live daemon.
pub const BUILD_STALL_FLOOR: std::time::Duration = std::time::Duration::from_secs(15);

/// Whether the daemon at `address` builds with BuildKit: its `/_ping` says
/// `Builder-Version: 2`, or, when it does not say, its API is 1.39 or newer. Any failure
/// answers `false`.
pub async fn supports_buildkit(address: &DaemonAddress) -> bool {
    let ping = async {
        let mut sender = daemon::connect(address).await.ok()?;
        let request = Request::builder()
            .method(Method::GET)
            .uri("/_ping")
            .header(HOST, address.host_header())
            .body(daemon::empty())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Some((header("Builder-Version"), header("Api-Version")))
    };
    match tokio::time::timeout(PING_TIMEOUT, ping).await {
        Ok(Some((Some(builder), _))) => builder.trim() == "2",
        Ok(Some((None, Some(api)))) => super::api_at_least(&api, 1, 39),
        _ => false,
    }
}

/// Builds with BuildKit on the daemon at `address`, lending it `dirs` over the session,
/// and calls `on_line` with each rendered progress line.
///
/// BuildKit's progress stream is silent while a step is (a `RUN sleep 25` left it silent
/// for 24 s on dockerd 26), so silence alone proves nothing; but a live daemon also checks
/// the session's health every 5 s. The build fails once neither happened for the stall
/// timeout (at least [`BUILD_STALL_FLOOR`]): the daemon is hung or gone.
pub async fn build(
    address: &DaemonAddress,
    request: &BuildkitBuild<'_>,
    dirs: SyncedDirs,
    stall: StallTimeout,
    mut on_line: impl FnMut(&str),
) -> Result<BuildkitOutcome, BuildkitError> {
    let login = request.registry_auth.map(|auth| session::RegistryLogin {
        host: auth.host.to_string(),
        username: auth.username.to_string(),
        password: Zeroizing::new(auth.password.to_string()),
    });
    let ledger = Arc::new(filesync::Ledger::default());
    let shared_key = shared_key(dirs.context.root());
    let files = filesync::FileSyncService::new(
        vec![
            (CONTEXT_DIR.to_string(), dirs.context),
            (DOCKERFILE_DIR.to_string(), dirs.dockerfile),
        ],
        Arc::clone(&ledger),
    );
    let control = super::control_timeout(stall);
    let watchdog = Watchdog::new(stall.get().max(BUILD_STALL_FLOOR));
    let session = session::start(
        address,
        "ecr-build-push",
        &shared_key,
        login,
        session::SecretStore::new(request.secrets),
        files,
        control,
        watchdog.clone(),
    )
    .await?;

    let mut renderer = ProgressRenderer::new(request.dockerfile_text);
    for (_, value) in request.secrets {
        if let Ok(text) = std::str::from_utf8(value) {
            renderer.mask(text.trim_end_matches(['\n', '\r']));
        }
    }
    if let Some(auth) = request.registry_auth {
        renderer.mask(auth.password);
    }

    // The context is fetched over the session: the request has no body, as the CLI's.
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(build_uri(request, &session.id))
        .header(HOST, address.host_header())
        .header(CONTENT_TYPE, "application/x-tar");
    if let Some(config) = registry_config_header(request.registry_auth) {
        builder = builder.header("X-Registry-Config", config.as_str());
    }
    let http_request = builder
        .body(daemon::empty())
        .map_err(|e| BuildkitError::Daemon(format!("cannot make the build request: {e}")))?;

    let streamed = watchdog
        .guard(answer::run_build(
            address,
            http_request,
            control,
            &watchdog,
            &mut renderer,
            &mut on_line,
        ))
        .await
        .unwrap_or_else(|stalled| {
            Err(BuildkitError::Daemon(format!(
                "the Docker daemon at {address} sent no build progress and did not check the \
                 build's session for {}: it seems hung; check it (`docker info`, its log), or \
                 raise {}",
                crate::network::stall::human(stalled.limit),
                crate::env::STALL_TIMEOUT
            )))
        });
    drop(session);

    // A file that could not be read is the real cause of the failure it made.
    if let Some(context) = ledger.take_failure() {
        return Err(BuildkitError::Context(context.to_string()));
    }
    let image_id = streamed?.image_id(&renderer)?;
    Ok(BuildkitOutcome {
        image_id,
        steps: renderer.steps(),
        cached_steps: renderer.cached_steps(),
        warnings: renderer.warnings().to_vec(),
        bases: renderer.bases(),
        sent: ledger.sent(),
    })
}

/// The session's shared key, stable for a context directory, as the Docker CLI derives
/// it: BuildKit keeps what it received under it, so the next build from the same
/// directory on this daemon is sent only the files that changed.
fn shared_key(context_root: &std::path::Path) -> String {
    use sha2::Digest as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"ecr-build-push:");
    hasher.update(context_root.as_os_str().as_bytes());
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut out, b| {
            use std::fmt::Write as _;
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// `/build?version=2&remote=client-session&session=...` with every option.
fn build_uri(request: &BuildkitBuild<'_>, session_id: &str) -> String {
    let mut build_args = request.build_args.clone();
    build_args
        .entry(INLINE_CACHE_ARG.to_string())
        .or_insert_with(|| "1".to_string());
    let mut query: Vec<(&str, String)> = vec![
        ("version", "2".into()),
        ("remote", "client-session".into()),
        ("session", session_id.into()),
        ("dockerfile", request.dockerfile.into()),
        ("rm", "1".into()),
        ("forcerm", "1".into()),
        (
            "buildargs",
            serde_json::to_string(&build_args).unwrap_or_default(),
        ),
        (
            "labels",
            serde_json::to_string(request.labels).unwrap_or_default(),
        ),
        (
            "cachefrom",
            serde_json::to_string(request.cache_from).unwrap_or_default(),
        ),
    ];
    for tag in request.tags {
        query.push(("t", tag.clone()));
    }
    if let Some(target) = request.target.filter(|t| !t.is_empty()) {
        query.push(("target", target.into()));
    }
    if let Some(platform) = request.platform.filter(|p| !p.is_empty()) {
        query.push(("platform", platform.into()));
    }
    if request.pull {
        query.push(("pull", "1".into()));
    }
    if request.no_cache {
        query.push(("nocache", "1".into()));
    }
    if let Some(compression) = request.exporter_compression {
        query.push(("outputs", exporter_outputs(compression)));
    }
    let mut uri = String::from("/build?");
    for (i, (key, value)) in query.iter().enumerate() {
        if i > 0 {
            uri.push('&');
        }
        uri.push_str(key);
        uri.push('=');
        uri.push_str(&percent_encode(value));
    }
    uri
}

/// `outputs`: the daemon's own image exporter (`moby`; the tags still name it), with
/// BuildKit's compression attributes. New layers only: base layers keep their stored
/// compression (no `force-compression`), so they still match the blobs in the registry.
/// zstd needs OCI media types.
fn exporter_outputs(compression: Compression) -> String {
    let mut attrs = serde_json::json!({
        "compression": compression.name(),
        "compression-level": compression.level().to_string(),
    });
    if matches!(compression, Compression::Zstd { .. }) {
        attrs["oci-mediatypes"] = "true".into();
    }
    serde_json::json!([{ "Type": "moby", "Attrs": attrs }]).to_string()
}

fn percent_encode(value: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// `X-Registry-Config`: base64url of `{"<host>": {"username", "password",
/// "serveraddress"}}`, as the Docker CLI sends it (BuildKit itself asks the session).
fn registry_config_header(auth: Option<RegistryCredentials<'_>>) -> Option<Zeroizing<String>> {
    let auth = auth?;
    let json = Zeroizing::new(
        serde_json::json!({
            auth.host: {
                "username": auth.username,
                "password": auth.password,
                "serveraddress": auth.host,
            }
        })
        .to_string(),
    );
    Some(Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE.encode(json.as_bytes()),
    ))
}

#[cfg(test)]
mod tests;
