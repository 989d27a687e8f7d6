//! The push, through the daemon's pusher (`POST /images/{name}/push`). The first tag
//! uploads the layers; the other tags then only write a manifest, so they go out
//! concurrently. Transient registry failures are retried with bounded backoff.

use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::PushImageOptions;
use futures_util::{stream, StreamExt as _, TryStreamExt as _};

use super::Engine;
use crate::ecr::RegistryAuth;
use crate::runner::Runner;

/// Retry policy for pushes: attempts and the first delay, doubled each time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    pub const DEFAULT: Self = Self {
        attempts: 4,
        first_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(20),
    };

    /// The same attempts without waiting (the `ECR_BUILD_PUSH_NO_RETRY_DELAY` test switch).
    #[must_use]
    pub fn without_delays(self) -> Self {
        Self {
            first_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            ..self
        }
    }

    fn delay(&self, attempt: u32) -> Duration {
        self.first_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(self.max_delay)
    }
}

/// Tags pushed concurrently after the first.
const TAG_CONCURRENCY: usize = 4;

#[derive(Debug, thiserror::Error)]
#[error("pushing {reference} to {registry} failed: {message}")]
pub struct PushError {
    pub reference: String,
    pub registry: String,
    pub message: String,
}

/// A pushed image: the manifest digest the registry answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub digest: String,
}

/// Pushes every `repository:tag`, returning the one digest they all share.
pub async fn push(
    engine: &Engine,
    repository_ref: &str,
    tags: &[String],
    auth: &RegistryAuth,
    retry: RetryPolicy,
    runner: &Runner,
) -> Result<Pushed, PushError> {
    let _group = runner.group(&format!("Push {repository_ref}"));
    let Some((first, rest)) = tags.split_first() else {
        return Err(PushError {
            reference: repository_ref.to_string(),
            registry: auth.registry.clone(),
            message: "no tags to push".into(),
        });
    };
    let digest = push_tag_with_retry(engine, repository_ref, first, auth, retry).await?;
    let others: Vec<String> = stream::iter(rest)
        .map(|tag| push_tag_with_retry(engine, repository_ref, tag, auth, retry))
        .buffer_unordered(TAG_CONCURRENCY)
        .try_collect()
        .await?;
    for (tag, other) in rest.iter().zip(&others) {
        if *other != digest {
            return Err(PushError {
                reference: format!("{repository_ref}:{tag}"),
                registry: auth.registry.clone(),
                message: format!("the registry answered digest {other}, but {first} got {digest}"),
            });
        }
    }
    Ok(Pushed { digest })
}

async fn push_tag_with_retry(
    engine: &Engine,
    repository_ref: &str,
    tag: &str,
    auth: &RegistryAuth,
    retry: RetryPolicy,
) -> Result<String, PushError> {
    let reference = format!("{repository_ref}:{tag}");
    let mut attempt = 1;
    loop {
        match push_tag(engine, repository_ref, tag, auth).await {
            Ok(digest) => return Ok(digest),
            Err(message) if attempt < retry.attempts && is_transient(&message) => {
                let delay = retry.delay(attempt);
                tracing::warn!(
                    "push of {reference} failed (attempt {attempt} of {}): {message}; retrying in {delay:?}",
                    retry.attempts
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(message) => {
                let message = if attempt > 1 {
                    format!("{message} (after {attempt} attempts)")
                } else {
                    message
                };
                return Err(PushError {
                    reference,
                    registry: auth.registry.clone(),
                    message,
                });
            }
        }
    }
}

/// One push of one tag. Returns the digest, or the daemon's error text.
async fn push_tag(
    engine: &Engine,
    repository_ref: &str,
    tag: &str,
    auth: &RegistryAuth,
) -> Result<String, String> {
    let credentials = DockerCredentials {
        username: Some(auth.username.clone()),
        password: Some(auth.password.expose().to_string()),
        serveraddress: Some(auth.registry.clone()),
        ..Default::default()
    };
    let options = PushImageOptions {
        tag: Some(tag.to_string()),
        ..Default::default()
    };
    let mut progress = engine
        .docker
        .push_image(repository_ref, Some(options), Some(credentials));
    let mut digest = None;
    while let Some(item) = progress.next().await {
        let info = item.map_err(|e| crate::error_chain(&e))?;
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
                eprintln!("{status}");
            } else {
                eprintln!("{tag}: {status}");
            }
        }
    }
    digest.ok_or_else(|| "the daemon finished the push without reporting a digest".to_string())
}

/// The daemon ends a push with `<tag>: digest: sha256:<hex> size: <n>`.
fn parse_digest(status: &str) -> Option<&str> {
    let rest = &status[status.find("digest: ")? + "digest: ".len()..];
    let digest = rest.split_whitespace().next()?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then_some(digest)
}

/// Failures a retry can cure: the network and the registry's overload answers. Refusals
/// (a missing repository, an immutable tag, denied access) are final.
fn is_transient(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    let final_markers = [
        "name unknown",
        "name_unknown",
        "tag invalid",
        "tag_invalid",
        "denied",
        "unauthorized",
        "not found",
        "manifest invalid",
    ];
    if final_markers.iter().any(|m| lower.contains(m)) {
        return false;
    }
    let transient_markers = [
        "connection refused",
        "connection reset",
        "broken pipe",
        "eof",
        "timeout",
        "timed out",
        "503",
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

    /// Backoff doubles from the first delay and stops at the cap; the test switch removes it.
    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::DEFAULT;
        assert_eq!(policy.delay(1), Duration::from_secs(2));
        assert_eq!(policy.delay(2), Duration::from_secs(4));
        assert_eq!(policy.delay(10), Duration::from_secs(20));
        assert_eq!(policy.without_delays().delay(3), Duration::ZERO);
    }
}
