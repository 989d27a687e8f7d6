//! The Docker side, through the Engine API: connecting ([`Engine::connect`]), the build
//! context ([`context`], [`dockerignore`]), the build ([`build`], [`buildkit`]) and the
//! push: through the daemon ([`push`]) (the direct push is [`crate::publish`]).

pub mod bases;
pub mod build;
pub mod buildkit;
pub mod context;
pub mod dockerignore;
pub mod platform;
pub mod push;

use std::time::Duration;

use anyhow::Context as _;
use bollard::{Docker, API_DEFAULT_VERSION};

use crate::env::DockerEnv;
use crate::network::stall::{self, StallTimeout};

/// How long a call that only asks or sets something may take: `docker info` and
/// `version` at connect, `_ping`, image inspect and tag, the BuildKit session's upgrade. A
/// daemon answers them in milliseconds; one that has not answered in this long is hung
/// or drowning, and the run stops naming it rather than waiting for the job's timeout.
/// The stall timeout shortens it when it is shorter ([`control_timeout`]). (bollard's
/// limit covers a request until its answer's headers; these answers are one small JSON
/// body written with them.)
pub const CONTROL_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The bound of the two calls whose wait for the answer's first byte no watchdog can
/// tell from a hang: the classic builder's (its first output comes once the whole context
/// is in, and a quiet `RUN` step sends nothing) and the classic store's export (the
/// daemon writes the whole image to disk before its first byte: moby
/// `image/tarexport/save.go`). Six hours is GitHub's job limit; the job's `timeout-minutes`
/// is the real bound. The classic builder's context upload, and the export once its first
/// byte came, are watched ([`stall`]); streams watched from the start (the daemon's push)
/// use it too, their watchdog being the bound.
pub const UNWATCHED_CALL_LIMIT: Duration = Duration::from_secs(6 * 60 * 60);

/// The bound of one control call, given the stall timeout: [`CONTROL_CALL_TIMEOUT`], or
/// the stall timeout when shorter (an answer that takes longer than a transfer may stay
/// still is stalled too).
pub fn control_timeout(stall: StallTimeout) -> Duration {
    CONTROL_CALL_TIMEOUT.min(stall.get())
}

/// The same client, without the control calls' bound on an answer's start: for the
/// calls of [`UNWATCHED_CALL_LIMIT`], and for streams a watchdog bounds from the start.
pub fn long_call(docker: &Docker) -> Docker {
    docker.clone().with_timeout(UNWATCHED_CALL_LIMIT)
}

const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// Re-cuts a stream into whole lines (without `\n` or `\r\n`): the daemon's chunks do not
/// align with lines, neither the classic builder's text nor BuildKit's JSON messages.
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    /// The lines that `data` completes.
    pub(crate) fn push(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        self.partial.extend_from_slice(data);
        let mut lines = Vec::new();
        let mut start = 0;
        while let Some(end) = self.partial[start..].iter().position(|b| *b == b'\n') {
            let mut line = &self.partial[start..start + end];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            lines.push(line.to_vec());
            start += end + 1;
        }
        self.partial.drain(..start);
        lines
    }

    /// What is left after the last newline, if anything.
    pub(crate) fn finish(self) -> Option<Vec<u8>> {
        Some(self.partial).filter(|p| !p.is_empty())
    }
}

/// A connected Docker engine, with the API version agreed with the daemon.
#[derive(Debug, Clone)]
pub struct Engine {
    pub docker: Docker,
    /// The `DOCKER_HOST` value it was reached at, for messages.
    pub host: String,
    /// The same daemon for BuildKit's own connections (session and build), with the same
    /// TLS settings as `docker`.
    pub daemon: buildkit::DaemonAddress,
    /// Whether the daemon is reached over TLS.
    pub tls: bool,
    pub version: String,
    pub api_version: String,
    /// Where the daemon keeps images, which decides what its export holds.
    pub store: ImageStore,
    /// How long its transfers may move nothing (`ECR_BUILD_PUSH_STALL_TIMEOUT`); `docker`
    /// bounds each control call by [`control_timeout`] of it.
    pub stall_timeout: StallTimeout,
}

/// The daemon's image store, from `docker info`: it decides what the export API gives
/// and so how the direct push sends an image ([`crate::publish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageStore {
    /// The graph-driver store (overlay2, …): layers are kept uncompressed, the image ID is
    /// the config digest, and no manifest exists until a push writes one.
    Classic,
    /// The containerd image store (`io.containerd.snapshotter.v1`, Docker 29's default):
    /// the compressed blobs and the manifest are kept as pulled or built, and the image ID
    /// is the digest of that manifest (or of its index).
    Containerd,
}

impl ImageStore {
    /// The `driver-type` that `docker info`'s `DriverStatus` shows on the containerd store.
    pub const CONTAINERD_DRIVER_TYPE: &'static str = "io.containerd.snapshotter.v1";

    /// The store named by `docker info`'s `DriverStatus` pairs.
    pub fn from_driver_status(status: &[Vec<String>]) -> Self {
        let containerd = status.iter().any(|pair| {
            matches!(pair.as_slice(), [key, value]
                if key == "driver-type" && value == Self::CONTAINERD_DRIVER_TYPE)
        });
        if containerd {
            Self::Containerd
        } else {
            Self::Classic
        }
    }
}

impl std::fmt::Display for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Classic => "classic image store",
            Self::Containerd => "containerd image store",
        })
    }
}

impl Engine {
    /// Whether the API agreed with the daemon is at least `major.minor`.
    pub fn api_at_least(&self, major: u32, minor: u32) -> bool {
        api_at_least(&self.api_version, major, minor)
    }

    /// Connects to the daemon named by `DOCKER_HOST` (default: the local socket) and
    /// agrees an API version, so a daemon that is missing, not running, not accessible or
    /// not answering fails here, before anything else, with what to do about it.
    pub async fn connect(env: &DockerEnv) -> anyhow::Result<Self> {
        let host = env.host.as_deref().unwrap_or(DEFAULT_SOCKET);
        let limit = control_timeout(env.stall_timeout);
        // bollard counts whole seconds; the stall timeout is at least one.
        let timeout = limit.as_secs().max(1);
        let tls = env.tls_verify || host.starts_with("https://");
        let mut cert_dir = None;
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            let socket = std::path::Path::new(path);
            if !socket.exists() {
                anyhow::bail!(
                    "the Docker socket {path} does not exist: start the Docker daemon, or set \
                     DOCKER_HOST to where it listens (in a workflow, mount it into the job \
                     container with `-v /var/run/docker.sock:/var/run/docker.sock`)"
                );
            }
            Docker::connect_with_unix(host, timeout, API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://")
            || host.starts_with("http://")
            || host.starts_with("https://")
        {
            if tls {
                let dir = env
                    .cert_path
                    .clone()
                    .context("DOCKER_TLS_VERIFY is set but neither DOCKER_CERT_PATH nor HOME is")?;
                cert_dir = Some(dir.clone());
                Docker::connect_with_ssl(
                    host,
                    &dir.join("key.pem"),
                    &dir.join("cert.pem"),
                    &dir.join("ca.pem"),
                    timeout,
                    API_DEFAULT_VERSION,
                )
            } else {
                Docker::connect_with_http(host, timeout, API_DEFAULT_VERSION)
            }
        } else {
            anyhow::bail!(
                "DOCKER_HOST `{host}` is not supported: use unix:///path/to/docker.sock, \
                 tcp://host:port or https://host:port"
            );
        }
        .with_context(|| format!("cannot set up a Docker client for {host}"))?;

        let daemon = match &cert_dir {
            Some(dir) => buildkit::DaemonAddress::tls(host, dir),
            None => buildkit::DaemonAddress::parse(host),
        }
        .map_err(|e| anyhow::anyhow!("cannot set up a Docker client for {host}: {e}"))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| explain_connect_error(host, &e, limit))?;
        // `docker info` is large; only its driver status is kept, so it is boxed.
        let store = Box::pin(async {
            let info = docker.info().await?;
            Ok(ImageStore::from_driver_status(
                &info.driver_status.unwrap_or_default(),
            ))
        });
        let (version, store) = tokio::try_join!(docker.version(), store)
            .map_err(|e: bollard::errors::Error| explain_connect_error(host, &e, limit))?;
        Ok(Self {
            host: host.to_string(),
            daemon,
            tls,
            api_version: docker.client_version().to_string(),
            version: version.version.unwrap_or_default(),
            store,
            docker,
            stall_timeout: env.stall_timeout,
        })
    }
}

/// Whether the API version `version` (`1.47`) is at least `major.minor`.
pub(crate) fn api_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version.trim().split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// The Dockerfile line a daemon's error message names: BuildKit's `Dockerfile:12` (its
/// source excerpt), else `line 12` (`dockerfile parse error on line 12: …`, from both
/// builders). Lines count from 1, so `0` names none.
pub(crate) fn dockerfile_line(message: &str) -> Option<u32> {
    let lower = message.to_ascii_lowercase();
    let number_after = |marker: &str| {
        let start = lower.find(marker)? + marker.len();
        let digits: String = lower[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok().filter(|n| *n > 0)
    };
    number_after("dockerfile:").or_else(|| number_after("line "))
}

/// Turns a failed first request into advice: permission, a dead daemon, one that does
/// not answer within `limit`, or the raw cause.
fn explain_connect_error(
    host: &str,
    err: &bollard::errors::Error,
    limit: Duration,
) -> anyhow::Error {
    if matches!(err, bollard::errors::Error::RequestTimeoutError) {
        return anyhow::anyhow!(
            "the Docker daemon at {host} (DOCKER_HOST) did not answer within {}: \
             something accepts connections there but does not answer (a hung or overloaded \
             daemon, or no Docker daemon); check it with `docker -H {host} info`, restart it, \
             or point DOCKER_HOST at a working daemon",
            stall::human(limit)
        );
    }
    let io_kind = std::iter::successors(Some(err as &dyn std::error::Error), |e| e.source())
        .find_map(|e| e.downcast_ref::<std::io::Error>().map(std::io::Error::kind));
    let chain = crate::error_chain(err);
    match io_kind {
        Some(std::io::ErrorKind::PermissionDenied) => anyhow::anyhow!(
            "permission denied on the Docker socket {host}: run as root or as a member of the \
             `docker` group ({chain})"
        ),
        Some(std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound) => {
            anyhow::anyhow!(
                "the Docker daemon at {host} is not running or not listening: start it \
                 (e.g. `sudo systemctl start docker`) or fix DOCKER_HOST ({chain})"
            )
        }
        _ => anyhow::anyhow!("cannot talk to the Docker daemon at {host}: {chain}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{api_at_least, dockerfile_line, ImageStore, LineBuffer};

    /// `docker info`'s driver status names the containerd store by its driver type; an
    /// overlay2 status (or none) is the classic store.
    #[test]
    fn the_image_store_comes_from_the_driver_type() {
        let pairs = |p: &[(&str, &str)]| -> Vec<Vec<String>> {
            p.iter()
                .map(|(k, v)| vec![(*k).into(), (*v).into()])
                .collect()
        };
        assert_eq!(
            ImageStore::from_driver_status(&pairs(&[(
                "driver-type",
                "io.containerd.snapshotter.v1"
            )])),
            ImageStore::Containerd
        );
        assert_eq!(
            ImageStore::from_driver_status(&pairs(&[
                ("Backing Filesystem", "extfs"),
                ("Supports d_type", "true")
            ])),
            ImageStore::Classic
        );
        assert_eq!(ImageStore::from_driver_status(&[]), ImageStore::Classic);
    }

    /// The line is read from both builders' messages, BuildKit's `Dockerfile:N` excerpt
    /// first; no number, or line 0, is none.
    #[test]
    fn dockerfile_lines_are_found_in_messages() {
        assert_eq!(
            dockerfile_line("dockerfile parse error on line 4: unknown instruction: FOO"),
            Some(4)
        );
        assert_eq!(
            dockerfile_line("Dockerfile parse error line 12: unknown instruction: FOO"),
            Some(12)
        );
        assert_eq!(
            dockerfile_line("process failed\nDockerfile:7\n----\n   7 | RUN false (line 2)"),
            Some(7)
        );
        assert_eq!(
            dockerfile_line("failed to read dockerfile: no such file"),
            None
        );
        assert_eq!(dockerfile_line("on line 0"), None);
        assert_eq!(dockerfile_line("no such thing"), None);
    }

    /// API versions compare by major, then minor, as numbers (`1.100` is after `1.45`).
    #[test]
    fn api_versions_compare_as_numbers() {
        assert!(api_at_least("1.45", 1, 39));
        assert!(api_at_least("1.100", 1, 45));
        assert!(!api_at_least("1.38", 1, 39));
        assert!(!api_at_least("garbage", 1, 0));
    }

    /// Chunks are re-cut into whole lines: a line split across chunks is joined, `\r\n`
    /// ends a line like `\n`, and the unterminated rest comes back at the end.
    #[test]
    fn line_buffer_rejoins_split_lines() {
        let mut buffer = LineBuffer::default();
        assert!(buffer.push(b"Step 1/2 : FR").is_empty());
        assert_eq!(
            buffer.push(b"OM a\nStep 2/2\r\n\nhal"),
            [
                b"Step 1/2 : FROM a".to_vec(),
                b"Step 2/2".to_vec(),
                Vec::new()
            ]
        );
        assert_eq!(buffer.finish(), Some(b"hal".to_vec()));
    }
}
