//! ECR's rules for the distribution API, in one place, each with where it is documented or
//! was reproduced against ECR. The reference registry (CNCF distribution) is laxer than
//! ECR on most of them, so a client that follows only the spec passes there and fails on
//! ECR; `tests/standin` plays these rules by default, and its README's conformance table
//! names the test that covers each.

use std::time::Duration;

/// Answers that mean a blob upload's `PATCH` was taken. The spec says 202; ECR answers
/// **201 Created** (reproduced in jdx/mise#11376; aws/containers-roadmap#2831). 204 is
/// what some other registries send.
pub const PATCH_TAKEN: [u16; 3] = [202, 201, 204];

/// Answers that mean an upload session was opened (`POST /blobs/uploads/`).
pub const SESSION_OPENED: [u16; 1] = [202];

/// Answers that mean an upload was completed (`PUT ?digest=`): 201 by the spec; 204 from
/// older registries.
pub const UPLOAD_COMPLETED: [u16; 2] = [201, 204];

/// Answers that mean a manifest was stored. ECR answers 201 with no `Location`
/// (oras-project/rust-oci-client#40), and whether it always sends
/// `Docker-Content-Digest` is unconfirmed, so the digest is always computed here.
pub const MANIFEST_STORED: [u16; 2] = [201, 200];

/// Only the first `PATCH` of an upload session keeps its body on ECR: later ones answer
/// 201, `Range` stops advancing and their data is dropped (aws/containers-roadmap#2831).
/// So every blob body goes in exactly one `PATCH` per session, and an upload whose
/// `PATCH` failed starts a new session instead of sending the body again.
pub const PATCHES_PER_SESSION: usize = 1;

/// ECR refuses an image manifest with more layers than this: 405 `UNSUPPORTED` "Limit on
/// number of layers per image exceeded". Undocumented; measured at 500 by
/// spinframework/spin#1787 (2023) and nuonco/nuon#2348 (2026), the error text from
/// openai/tart#890.
pub const MAX_LAYERS: usize = 500;

/// Whether ECR takes an image of `layers` layers; if not, why, and what to do.
pub fn check_layer_count(layers: usize) -> Result<(), String> {
    if layers <= MAX_LAYERS {
        return Ok(());
    }
    Err(format!(
        "it has {layers} layers, and ECR refuses an image with more than {MAX_LAYERS} (405 \
         \"Limit on number of layers per image exceeded\"): merge RUN steps, or build with a \
         multi-stage Dockerfile whose last stage copies the result"
    ))
}

/// ECR's manifest size limit: 4 MiB (the API model's `ImageManifest` length; the OCI
/// distribution spec asks registries to take at least that much).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Extra attempts for throttled requests (429 `TOOMANYREQUESTS` "Rate exceeded": ECR's
/// common errors), beyond the usual policy's: throttling is ECR pacing the client, not a
/// fault, and it passes. Each wait is jittered, so parallel uploads do not retry in step.
pub const THROTTLED_ATTEMPTS: u32 = 8;

/// Tags put at once after the first, by either pusher (the daemon's, one push per tag;
/// the direct one, one manifest `PUT` per tag): each is one `PutImage`, whose rate ECR
/// limits per account and Region (ECR User Guide, "Amazon ECR service quotas": the push
/// calls other than `BatchCheckLayerAvailability` default to 10 a second). Four keeps a
/// push of many tags well under that, with room for other pushes in the account; a tag
/// is a small request, so more at once would save little time.
pub const TAG_CONCURRENCY: usize = 4;

/// How long the eventually consistent side of ECR (`DescribeImages`, a manifest `GET`
/// right after a push) is waited for before a missing image counts as missing. ECR
/// documents no bound; docker/github-builder#30 waits 5 s for ECR hosts.
pub const VISIBILITY_WAIT: Duration = Duration::from_secs(30);

/// How ECR's account setting `BLOB_MOUNTING` stands (ECR User Guide, "blob mounting";
/// `GetAccountSetting`). A cross-repository mount succeeds only when it is `ENABLED`, the
/// source is in the same account, region and encryption, and a manifest in the source
/// repository references the blob; otherwise ECR answers 202 with a new upload session
/// (aws/containers-roadmap#2860).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mounting {
    Enabled,
    Disabled,
    /// The setting could not be read (a role without `ecr:GetAccountSetting` is common):
    /// mounts are tried, and a 202 is used as the upload session it opened.
    #[default]
    Unknown,
}

impl Mounting {
    /// From `GetAccountSetting`'s value.
    pub fn from_setting(value: &str) -> Self {
        match value {
            "ENABLED" => Self::Enabled,
            "DISABLED" => Self::Disabled,
            _ => Self::Unknown,
        }
    }

    /// Whether a mount is worth a request.
    pub fn may_mount(self) -> bool {
        self != Self::Disabled
    }
}

/// Statuses a refused credential gets: ECR's 403, the spec's 401.
pub const FORBIDDEN: [u16; 2] = [403, 401];

/// An expired registry token: ECR answers **403 `DENIED`** "Your authorization token has
/// expired. Reauthenticate and try again." (aws/aws-cli#2351), not the spec's 401. A
/// `HEAD` answer has no body to say so: then a 403 after the token's `expiresAt` counts.
pub fn token_expired(status: u16, code: Option<&str>, message: &str) -> bool {
    FORBIDDEN.contains(&status)
        && matches!(code, Some("DENIED" | "UNAUTHORIZED") | None)
        && message.to_ascii_lowercase().contains("expired")
}

/// ECR Public's registry host: images are `public.ecr.aws/<alias>/<repository>`.
pub const PUBLIC_REGISTRY: &str = "public.ecr.aws";

/// An expired or invalid token on ECR Public (`public.ecr.aws`, the credentials sent as
/// `Bearer`): **400 `DENIED`** "Your Authorization Token is invalid.", with no challenge
/// (aws/containers-roadmap#2835; lablup/backend.ai#2549), not private ECR's 403 nor the
/// spec's 401 (ECR Public answers 401 only to anonymous requests). A `HEAD` answer has no
/// body to carry the code, so a bare 400 counts too: the token is then renewed once, and
/// a second refusal is final.
pub fn public_token_refused(status: u16, code: Option<&str>) -> bool {
    status == 400 && matches!(code, Some("DENIED") | None)
}

/// ECR's throttling answer (429 `TOOMANYREQUESTS`).
pub fn throttled(status: u16, code: Option<&str>) -> bool {
    status == 429 || code == Some("TOOMANYREQUESTS")
}

/// Overload and server errors are retried; refusals (`NAME_UNKNOWN`, `TAG_INVALID`,
/// `DENIED`, 401, 403, other 4xx) are final.
pub fn status_is_transient(status: u16, code: Option<&str>) -> bool {
    let refusal = matches!(
        code,
        Some(
            "NAME_UNKNOWN"
                | "TAG_INVALID"
                | "DENIED"
                | "UNAUTHORIZED"
                | "MANIFEST_INVALID"
                | "MANIFEST_BLOB_UNKNOWN"
                | "NAME_INVALID"
                | "UNSUPPORTED"
        )
    );
    !refusal && (status == 408 || status == 429 || (500..600).contains(&status))
}

/// Registry answers that mean the upload session is gone, or holds other bytes than
/// were sent, so the upload starts again in a new session rather than retrying.
pub fn session_lost(status: Option<u16>, code: Option<&str>) -> bool {
    matches!(status, Some(404 | 416))
        || matches!(
            code,
            Some("BLOB_UPLOAD_UNKNOWN" | "BLOB_UPLOAD_INVALID" | "DIGEST_INVALID")
        )
}

/// What a 403 other than an expired token means on ECR, for the error a person reads:
/// a missing permission, or a quota (more than 1,000 tags on one image, or the images
/// per repository quota, are answered 403: aws/containers-roadmap#2159).
pub const FORBIDDEN_HINT: &str = "ECR answers 403 when the credentials lack a permission \
     (ecr:InitiateLayerUpload, ecr:UploadLayerPart, ecr:CompleteLayerUpload, ecr:PutImage, \
     ecr:BatchCheckLayerAvailability on the repository) and when a quota is reached (images \
     per repository; 1,000 tags on one image): check the role's policy and the repository's \
     quotas in Service Quotas";

/// Media types with parameters (`;`) are refused by ECR (aws/containers-roadmap#2306;
/// sigstore/sigstore-js#1058), so none is ever sent.
pub fn media_type_accepted(media_type: &str) -> bool {
    !media_type.contains(';')
}

/// Whether `range` (an upload's `Range: 0-<last>` answer) says the registry holds all
/// `size` bytes sent. A registry that says nothing is taken at its word (the completing
/// `PUT ?digest=` checks the bytes anyway).
pub fn range_holds(range: Option<&str>, size: u64) -> bool {
    let Some(range) = range else { return true };
    let last = range
        .trim()
        .trim_start_matches("bytes=")
        .split_once('-')
        .and_then(|(_, last)| last.trim().parse::<u64>().ok());
    match last {
        Some(last) => last + 1 == size,
        // `0-0` style answers for an empty body, or a form we do not know.
        None => size == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overload and server errors are retried; ECR's refusals and auth failures are not.
    #[test]
    fn refusals_are_final() {
        assert!(status_is_transient(503, Some("UNAVAILABLE")));
        assert!(status_is_transient(429, Some("TOOMANYREQUESTS")));
        assert!(status_is_transient(500, None));
        assert!(!status_is_transient(404, Some("NAME_UNKNOWN")));
        assert!(!status_is_transient(400, Some("TAG_INVALID")));
        assert!(!status_is_transient(401, Some("UNAUTHORIZED")));
        assert!(!status_is_transient(403, Some("DENIED")));
        assert!(!status_is_transient(405, Some("UNSUPPORTED")));
    }

    /// ECR's expired token is a 403 DENIED saying so; other 403s are not.
    #[test]
    fn an_expired_token_is_a_403_that_says_so() {
        let expired = "Your authorization token has expired. Reauthenticate and try again.";
        assert!(token_expired(403, Some("DENIED"), expired));
        assert!(!token_expired(
            403,
            Some("DENIED"),
            "requested access to the resource is denied"
        ));
        assert!(!token_expired(404, Some("NAME_UNKNOWN"), "expired"));
    }

    /// ECR Public's refused Bearer token is a 400 `DENIED` (or a bodiless 400 to a
    /// `HEAD`); its other 400s, and a 401 or 403, are not.
    #[test]
    fn a_refused_public_token_is_a_400_denied() {
        assert!(public_token_refused(400, Some("DENIED")));
        assert!(public_token_refused(400, None));
        assert!(!public_token_refused(400, Some("TAG_INVALID")));
        assert!(!public_token_refused(400, Some("MANIFEST_INVALID")));
        assert!(!public_token_refused(403, Some("DENIED")));
        assert!(!public_token_refused(401, Some("UNAUTHORIZED")));
        // Private ECR's rule does not take ECR Public's answer, nor the reverse.
        assert!(!token_expired(
            400,
            Some("DENIED"),
            "Your Authorization Token is invalid."
        ));
        assert!(!status_is_transient(400, Some("DENIED")));
    }

    /// `Range: 0-<last>` must cover every byte sent; ECR's dropped PATCH leaves it short.
    #[test]
    fn a_short_range_means_the_bytes_were_dropped() {
        assert!(range_holds(Some("0-9"), 10));
        assert!(range_holds(Some("bytes=0-9"), 10));
        assert!(!range_holds(Some("0-4"), 10));
        assert!(range_holds(None, 10));
        assert!(!range_holds(Some("garbage"), 10));
    }

    /// Mounting is tried unless ECR says the setting is off.
    #[test]
    fn mounts_are_skipped_only_when_ecr_says_they_are_off() {
        assert!(!Mounting::from_setting("DISABLED").may_mount());
        assert!(Mounting::from_setting("ENABLED").may_mount());
        assert!(Mounting::Unknown.may_mount());
    }

    /// 500 layers pass; 501 fail with a message naming the limit and the way out.
    #[test]
    fn more_layers_than_ecr_takes_are_refused_by_count() {
        assert!(check_layer_count(MAX_LAYERS).is_ok());
        let err = check_layer_count(MAX_LAYERS + 1).unwrap_err();
        assert!(
            err.contains("501 layers") && err.contains("more than 500"),
            "{err}"
        );
        assert!(err.contains("multi-stage"), "{err}");
    }

    #[test]
    fn media_types_with_parameters_are_refused() {
        assert!(media_type_accepted(
            "application/vnd.oci.image.manifest.v1+json"
        ));
        assert!(!media_type_accepted(
            "application/vnd.dev.sigstore.bundle+json;version=0.3"
        ));
    }
}
