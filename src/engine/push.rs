//! The push, through the daemon's pusher (`POST /images/{name}/push`). The first tag
//! uploads the layers; the other tags then only write a manifest, so they go out
//! concurrently. Transient registry failures are retried with bounded backoff.

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use futures_util::{stream, StreamExt as _, TryStreamExt as _};

use super::{Engine, ImageStore};
use crate::ecr::RegistryAuth;
use crate::network::stall::{self, Turn};
use crate::progress::Progress;
use crate::registry::{rules, RetryPolicy};

#[derive(Debug, thiserror::Error)]
#[error("pushing {reference} to {registry} failed: {message}")]
pub struct PushError {
    pub reference: String,
    pub registry: String,
    pub message: String,
    /// The last attempt failed as a retry could cure, and the attempts ran out: the
    /// registry (or the way to it) is failing, and another pusher would meet it too.
    pub transient: bool,
}

/// A pushed image: the manifest digest the registry answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub digest: String,
}

/// What to push: the built image, under `repository_ref:<tag>` for every tag.
#[derive(Debug, Clone, Copy)]
pub struct PushTarget<'a> {
    pub repository_ref: &'a str,
    pub image_id: &'a str,
    pub auth: &'a RegistryAuth,
}

/// One failed attempt, and whether another attempt could succeed.
#[derive(Debug)]
struct Failure {
    message: String,
    transient: bool,
}

impl Failure {
    fn from_daemon(message: String) -> Self {
        let transient = is_transient(&message);
        Self { message, transient }
    }
}

/// Pushes every tag in a group of `progress`, returning the one digest they all share.
pub async fn push(
    engine: &Engine,
    target: PushTarget<'_>,
    tags: &[String],
    retry: RetryPolicy,
    progress: &dyn Progress,
) -> Result<Pushed, PushError> {
    let _group = progress.group(&format!("Push {}", target.repository_ref));
    let Some((first, rest)) = tags.split_first() else {
        return Err(PushError {
            reference: target.repository_ref.to_string(),
            registry: target.auth.registry.clone(),
            message: "no tags to push".into(),
            transient: false,
        });
    };
    let platform = push_platform(engine, target.image_id).await;
    let platform = platform.as_deref();
    let digest =
        push_tag_with_retry(engine, target, first, platform, retry, false, progress).await?;
    let others: Vec<String> = stream::iter(rest)
        .map(|tag| push_tag_with_retry(engine, target, tag, platform, retry, false, progress))
        .buffer_unordered(rules::TAG_CONCURRENCY)
        .try_collect()
        .await?;
    for (tag, other) in rest.iter().zip(&others) {
        if *other != digest {
            return Err(PushError {
                reference: format!("{}:{tag}", target.repository_ref),
                registry: target.auth.registry.clone(),
                message: format!("the registry answered digest {other}, but {first} got {digest}"),
                transient: false,
            });
        }
    }
    Ok(Pushed { digest })
}

/// Pushes the image under `tag` alone: its blobs and its image manifest (on the
/// containerd store, its platform's), retried as [`push`] retries each tag, except when
/// the daemon cannot reach the registry ([`is_unreachable`]): the caller has the direct
/// push to turn to, whose own way there the action has just proved. The daemon's lines go
/// to `progress`, in whatever group the caller has open.
pub async fn push_one(
    engine: &Engine,
    target: PushTarget<'_>,
    tag: &str,
    retry: RetryPolicy,
    progress: &dyn Progress,
) -> Result<Pushed, PushError> {
    let platform = push_platform(engine, target.image_id).await;
    let platform = platform.as_deref();
    let digest = push_tag_with_retry(engine, target, tag, platform, retry, true, progress).await?;
    Ok(Pushed { digest })
}

/// The push API's `platform` for `image_id`: on the containerd store its platform, so the
/// daemon pushes that platform's image manifest (API 1.46 and later) rather than an
/// index; none on the classic store, which has no index.
async fn push_platform(engine: &Engine, image_id: &str) -> Option<String> {
    match engine.store {
        ImageStore::Classic => None,
        ImageStore::Containerd => image_platform(engine, image_id).await,
    }
}

/// The image's platform as the push API's `platform` parameter (JSON), which makes the
/// containerd store push that platform's image manifest rather than the image's index
/// (API 1.46+; older daemons ignore it).
async fn image_platform(engine: &Engine, image_id: &str) -> Option<String> {
    let image = engine.docker.inspect_image(image_id).await.ok()?;
    let mut platform = serde_json::json!({
        "os": image.os?,
        "architecture": image.architecture?,
    });
    if let Some(variant) = image.variant.filter(|v| !v.is_empty()) {
        platform["variant"] = variant.into();
    }
    Some(platform.to_string())
}

async fn push_tag_with_retry(
    engine: &Engine,
    target: PushTarget<'_>,
    tag: &str,
    platform: Option<&str>,
    retry: RetryPolicy,
    another_way: bool,
    progress: &dyn Progress,
) -> Result<String, PushError> {
    let reference = format!("{}:{tag}", target.repository_ref);
    let mut attempt = 1;
    loop {
        let failure = match push_tag(engine, target, tag, platform, progress).await {
            Ok(digest) => return Ok(digest),
            // With another way to the registry, the daemon's own way failing is final.
            Err(mut failure) if another_way && is_unreachable(&failure.message) => {
                failure.transient = false;
                failure
            }
            Err(failure) => failure,
        };
        // The daemon reports ECR's 429 as `toomanyrequests: Rate exceeded`.
        let throttled = failure
            .message
            .to_ascii_lowercase()
            .contains("toomanyrequests");
        let budget = retry.attempts_for(throttled);
        if attempt < budget && failure.transient {
            let delay = retry.jittered_delay(attempt);
            let why = if throttled { "was throttled" } else { "failed" };
            tracing::warn!(
                "push of {reference} {why} (attempt {attempt} of {budget}): {}; retrying in \
                 {delay:.1?}",
                failure.message
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
            continue;
        }
        let message = if attempt > 1 {
            format!("{} (after {attempt} attempts)", failure.message)
        } else {
            failure.message
        };
        return Err(PushError {
            reference,
            registry: target.auth.registry.clone(),
            message,
            transient: failure.transient,
        });
    }
}

/// One push of one tag. The daemon pushes whatever the local tag names when the push
/// starts, and another build on the same daemon may have moved that tag since this run
/// set it; so the tag is set again just before the push, and the digest is accepted only
/// if the daemon recorded it against this run's image.
async fn push_tag(
    engine: &Engine,
    target: PushTarget<'_>,
    tag: &str,
    platform: Option<&str>,
    progress: &dyn Progress,
) -> Result<String, Failure> {
    engine
        .docker
        .tag_image(
            target.image_id,
            Some(TagImageOptions {
                repo: Some(target.repository_ref.to_string()),
                tag: Some(tag.to_string()),
            }),
        )
        .await
        .map_err(|e| Failure::from_daemon(crate::error_chain(&e)))?;
    let credentials = DockerCredentials {
        username: Some(target.auth.username.clone()),
        password: Some(target.auth.password.expose().to_string()),
        serveraddress: Some(target.auth.registry.clone()),
        ..Default::default()
    };
    let options = PushImageOptions {
        tag: Some(tag.to_string()),
        platform: platform.map(ToString::to_string),
    };
    // A push that reports nothing new for the stall timeout is stuck: in the daemon, or
    // on its way to the registry. Watched from the request on (its answer starts at once).
    let watchdog = engine.stall_timeout.watchdog();
    let docker = super::long_call(&engine.docker);
    let mut answers = docker.push_image(target.repository_ref, Some(options), Some(credentials));
    let mut reports = RecentReports::default();
    let mut digest = None;
    loop {
        let next = watchdog
            .guard(answers.next())
            .await
            .map_err(|stalled| push_stalled(engine, stalled))?;
        let Some(item) = next else { break };
        let info = item.map_err(|e| Failure::from_daemon(crate::error_chain(&e)))?;
        if reports.is_new(&info) {
            watchdog.moved(Turn::Peer);
        }
        let Some(status) = info.status.as_deref() else {
            continue;
        };
        if let Some(found) = parse_digest(status) {
            digest = Some(found.to_string());
        }
        // Byte-level progress would flood the log; keep per-layer milestones.
        if info
            .progress_detail
            .as_ref()
            .is_none_or(|p| p.total.is_none())
        {
            // The daemon's last line names the tag itself.
            if status.starts_with(&format!("{tag}: ")) {
                progress.line(status);
            } else {
                progress.line(&format!("{tag}: {status}"));
            }
        }
    }
    let digest = digest.ok_or_else(|| Failure {
        message: "the daemon finished the push without reporting a digest".into(),
        transient: false,
    })?;
    let pushed_ours = engine
        .docker
        .inspect_image(target.image_id)
        .await
        .map_err(|e| Failure::from_daemon(crate::error_chain(&e)))?
        .repo_digests
        .unwrap_or_default()
        .contains(&format!("{}@{digest}", target.repository_ref));
    if pushed_ours {
        Ok(digest)
    } else {
        Err(Failure {
            message: format!(
                "a concurrent build on this Docker daemon moved the local tag {}:{tag}, \
                 so the push sent another image ({digest})",
                target.repository_ref
            ),
            transient: true,
        })
    }
}

/// The daemon's push reported nothing new for the stall timeout. Final: pushing again
/// through the same daemon would wait as long again.
fn push_stalled(engine: &Engine, stalled: stall::Stalled) -> Failure {
    Failure {
        message: format!(
            "the Docker daemon at {} reported no progress for {}: it, or its connection to \
             the registry, stopped moving; check the daemon (`docker info`, its log) and its \
             network to the registry, or raise {}",
            engine.host,
            stall::human(stalled.limit),
            crate::env::STALL_TIMEOUT
        ),
        transient: false,
    }
}

/// What the daemon's push reported lately, to tell progress from repetition: the
/// containerd store's pusher reports every ongoing layer every 100 ms whether its bytes
/// moved or not (moby `daemon/containerd/progress.go`, `showProgress`), so only a report
/// unlike the recent ones (another status, another byte count) is progress.
#[derive(Debug, Default)]
struct RecentReports(std::collections::VecDeque<(Option<String>, Option<i64>, Option<i64>)>);

impl RecentReports {
    /// More than the layers a daemon pushes at once (`max-concurrent-uploads`, 5), so a
    /// stalled push's repeated reports are all still here when they come round again.
    const KEPT: usize = 64;

    fn is_new(&mut self, info: &bollard::models::PushImageInfo) -> bool {
        let detail = info.progress_detail.as_ref();
        let report = (
            info.status.clone(),
            detail.and_then(|d| d.current),
            detail.and_then(|d| d.total),
        );
        if self.0.contains(&report) {
            return false;
        }
        if self.0.len() == Self::KEPT {
            self.0.pop_front();
        }
        self.0.push_back(report);
        true
    }
}

/// The daemon ends a push with `<tag>: digest: sha256:<hex> size: <n>`.
fn parse_digest(status: &str) -> Option<&str> {
    let rest = &status[status.find("digest: ")? + "digest: ".len()..];
    let digest = rest.split_whitespace().next()?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(digest)
}

/// The registry's refusals (a missing repository, an immutable tag, denied access, an
/// unknown manifest or blob): final, for this pusher and any other.
pub fn is_refusal(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "name unknown",
        "name_unknown",
        "tag invalid",
        "tag_invalid",
        "denied",
        "unauthorized",
        "not found",
        "manifest invalid",
    ]
    .iter()
    .any(|m| lower.contains(m))
}

/// Failures of the daemon's own way to the registry (its name lookup, routes, trust
/// roots) rather than of the registry's answers: a remote engine's network, say, that
/// does not reach the registry the action itself reaches.
pub fn is_unreachable(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "no such host",
        "server misbehaving",
        "dial tcp",
        "network is unreachable",
        "no route to host",
        "connection refused",
        "i/o timeout",
        "x509:",
        "tls: failed to verify",
    ]
    .iter()
    .any(|m| lower.contains(m))
}

/// Failures a retry can cure: the network and the registry's overload answers. Refusals
/// (a missing repository, an immutable tag, denied access) are final.
fn is_transient(message: &str) -> bool {
    if is_refusal(message) {
        return false;
    }
    let lower = message.to_ascii_lowercase();
    let transient_markers = [
        "connection refused",
        "connection reset",
        "broken pipe",
        "eof",
        "timeout",
        "timed out",
        "503",
        // containerd's pusher names the registry's error code: `unavailable`,
        // `toomanyrequests`.
        "unavailable",
        "502",
        "504",
        "500 internal server error",
        "429",
        "too many requests",
        "toomanyrequests",
        "service unavailable",
        "temporarily unavailable",
        "retry",
    ];
    transient_markers.iter().any(|m| lower.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest is read from the daemon's final push status.
    #[test]
    fn digest_is_parsed_from_the_final_status() {
        let hex = "a".repeat(64);
        assert_eq!(
            parse_digest(&format!("v1: digest: sha256:{hex} size: 528")),
            Some(format!("sha256:{hex}").as_str())
        );
        assert_eq!(parse_digest("Pushed"), None);
        assert_eq!(parse_digest("v1: digest: sha256:abc size: 1"), None);
    }

    /// Overload and network errors are retried; refusals are not.
    #[test]
    fn only_transient_errors_are_retried() {
        assert!(is_transient(
            "received unexpected HTTP status: 503 Service Unavailable"
        ));
        assert!(is_transient(
            "read tcp 127.0.0.1:1->127.0.0.2:443: read: connection reset by peer"
        ));
        assert!(is_transient("toomanyrequests: Rate exceeded"));
        // Regression: containerd's pusher (the containerd store's) names the registry's
        // error code only, and a 503 was taken for final and not retried.
        assert!(is_transient(
            "Docker stream error: error from registry: unavailable\nunavailable"
        ));
        assert!(!is_transient(
            "name unknown: The repository with name 'x' does not exist"
        ));
        assert!(!is_transient(
            "tag invalid: The image tag 'v1' already exists"
        ));
        assert!(!is_transient(
            "denied: Your authorization token has expired"
        ));
    }

    /// A daemon on a unix socket that answers a push as dockerd does: the tag, the push's
    /// status stream (a progress bar among the milestones; the digest in the last line),
    /// and the image's `RepoDigests` naming what was pushed.
    fn fake_daemon(socket: &std::path::Path, repository: &str, digest: &str) {
        use hyper::{body::Incoming, Request, Response};
        let listener = tokio::net::UnixListener::bind(socket).unwrap();
        let (repository, digest) = (repository.to_string(), digest.to_string());
        let answer = move |request: &Request<Incoming>| {
            let path = request.uri().path();
            let query = request.uri().query().unwrap_or_default();
            let tag = query
                .split('&')
                .find_map(|p| p.strip_prefix("tag="))
                .unwrap_or("");
            if path.ends_with("/push") {
                [
                    serde_json::json!({"status": format!("The push refers to repository [{repository}]")}),
                    serde_json::json!({"status": "Preparing", "progressDetail": {}, "id": "5f70bf18a086"}),
                    serde_json::json!({"status": "Pushing", "id": "5f70bf18a086",
                                       "progressDetail": {"current": 512, "total": 1024}}),
                    serde_json::json!({"status": "Pushed", "progressDetail": {}, "id": "5f70bf18a086"}),
                    serde_json::json!({"status": format!("{tag}: digest: {digest} size: 528")}),
                    serde_json::json!({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": 528}}),
                ]
                .map(|line| format!("{line}\r\n"))
                .concat()
            } else if path.ends_with("/json") {
                serde_json::json!({"Id": "sha256:image", "RepoDigests": [format!("{repository}@{digest}")]})
                    .to_string()
            } else {
                String::new()
            }
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let body = bytes::Bytes::from(answer(&request));
                    let response = Response::builder()
                        .header("Content-Type", "application/json")
                        .body(http_body_util::Full::new(body));
                    async move { response }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
    }

    /// The daemon's push goes to the sink it is given, not to stderr: one group around
    /// every tag, each milestone named by its tag (the final line, which names it
    /// already, as it is), byte-level progress left out.
    #[tokio::test]
    async fn the_push_reports_through_its_sink() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let (repository, digest) = ("r.example/app", format!("sha256:{}", "b".repeat(64)));
        fake_daemon(&socket, repository, &digest);
        let host = format!("unix://{}", socket.display());
        let engine = Engine {
            docker: bollard::Docker::connect_with_unix(&host, 10, bollard::API_DEFAULT_VERSION)
                .unwrap(),
            daemon: super::super::buildkit::DaemonAddress::parse(&host).unwrap(),
            host,
            tls: false,
            version: "26.1.0".into(),
            api_version: "1.45".into(),
            store: ImageStore::Classic,
            stall_timeout: crate::network::stall::StallTimeout::DEFAULT,
        };
        let auth = RegistryAuth {
            registry: "r.example".into(),
            username: "AWS".into(),
            password: crate::credentials::Secret::new("pw".into()),
            token: crate::credentials::Secret::new("dG9rZW4=".into()),
            expires_at: None,
            renew: None,
            scheme: crate::registry::Scheme::Basic,
        };
        let target = PushTarget {
            repository_ref: repository,
            image_id: "sha256:image",
            auth: &auth,
        };
        let sink = crate::progress::Recorder::default();
        let tags = ["v1".to_string(), "v2".to_string()];
        let pushed = push(&engine, target, &tags, RetryPolicy::DEFAULT, &sink)
            .await
            .unwrap();
        assert_eq!(pushed.digest, digest);
        let mut expected = vec![format!("group Push {repository}")];
        for tag in &tags {
            expected.extend([
                format!("{tag}: The push refers to repository [{repository}]"),
                format!("{tag}: Preparing"),
                format!("{tag}: Pushed"),
                format!("{tag}: digest: {digest} size: 528"),
            ]);
        }
        expected.push("end group".into());
        assert_eq!(sink.events(), expected);
    }

    /// The daemon's own way to the registry failing, as Docker words it, is told apart
    /// from the registry's answers.
    #[test]
    fn an_unreachable_registry_is_told_from_its_answers() {
        for way in [
            "Get \"https://r/v2/\": dial tcp: lookup r on 127.0.0.53:53: no such host",
            "dial tcp 10.0.0.1:443: connect: connection refused",
            "Get \"https://r/v2/\": dial tcp 10.0.0.1:443: i/o timeout",
            "tls: failed to verify certificate: x509: certificate signed by unknown authority",
        ] {
            assert!(is_unreachable(way), "{way}");
        }
        for answer in [
            "error from registry: unavailable\nunavailable",
            "received unexpected HTTP status: 503 Service Unavailable",
            "blob upload invalid: injected fault",
            "denied: Your authorization token has expired",
        ] {
            assert!(!is_unreachable(answer), "{answer}");
        }
    }

    /// The containerd store's pusher repeats every ongoing layer's report each 100 ms: a
    /// repetition is not progress, a new byte count or status is.
    #[test]
    fn repeated_push_reports_are_not_progress() {
        let report = |status: &str, current: Option<i64>| bollard::models::PushImageInfo {
            status: Some(status.into()),
            progress_detail: current.map(|c| bollard::models::ProgressDetail {
                current: Some(c),
                total: Some(100),
            }),
            ..Default::default()
        };
        let mut reports = RecentReports::default();
        assert!(reports.is_new(&report("Pushing", Some(10))));
        assert!(reports.is_new(&report("Pushing", Some(40))));
        assert!(reports.is_new(&report("Waiting", None)));
        // A stalled push: the same two layers at the same counts, over and over.
        for _ in 0..100 {
            assert!(!reports.is_new(&report("Pushing", Some(10))));
            assert!(!reports.is_new(&report("Pushing", Some(40))));
            assert!(!reports.is_new(&report("Waiting", None)));
        }
        assert!(reports.is_new(&report("Pushing", Some(41))));
        assert!(reports.is_new(&report("Pushed", None)));
    }
}
