//! ECR's image scans: wait for the findings of each pushed manifest, starting the scan
//! when the repository does not scan on push.
//!
//! [`Ecr::scan_findings`] takes one digest per manifest (several for a multi-platform
//! push: one per platform's image) and scans them concurrently. Each ends as
//! [`ManifestScan::Scanned`], with basic (`findings`) or enhanced (Amazon Inspector's
//! `enhancedFindings`) results, or [`ManifestScan::NotScanned`] with the reason: an index
//! or an unsupported OS, a failed scan, no scan at all, or the timeout. The gate
//! ([`crate::gate`]) decides what those mean for the run.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_sdk_ecr::error::ProvideErrorMetadata;
use aws_sdk_ecr::operation::describe_image_scan_findings::DescribeImageScanFindingsOutput;
use aws_sdk_ecr::types::{ImageIdentifier, ScanStatus};

use super::{api_error, Ecr};
use crate::inputs::Severity;

/// What to scan and how long to wait.
#[derive(Debug, Clone)]
pub struct ScanRequest<'a> {
    pub repository: &'a str,
    pub registry_id: Option<&'a str>,
    /// One manifest digest per pushed image (per platform).
    pub digests: &'a [String],
    /// The repository scans on push; otherwise the scan is started here.
    pub scans_on_push: bool,
    pub timeout: Duration,
    pub poll: Backoff,
}

/// Poll intervals: `first`, growing by half up to `max`, never past the deadline.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const DEFAULT: Self = Self {
        first: Duration::from_secs(2),
        max: Duration::from_secs(30),
    };

    fn next(self, current: Duration) -> Duration {
        (current + current / 2).min(self.max)
    }
}

/// Which of ECR's scanners produced the findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanType {
    /// ECR's basic scanning (`findings`).
    Basic,
    /// Enhanced scanning by Amazon Inspector (`enhancedFindings`).
    Enhanced,
}

impl ScanType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Basic => "basic scanning",
            Self::Enhanced => "enhanced scanning (Amazon Inspector)",
        }
    }
}

/// One vulnerability in one manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The CVE id (or the scanner's name for it).
    pub name: String,
    pub severity: Severity,
    pub package: Option<String>,
    pub version: Option<String>,
    pub uri: Option<String>,
}

/// How one manifest's scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestScan {
    Scanned {
        digest: String,
        scan_type: ScanType,
        findings: Vec<Finding>,
    },
    /// ECR has no findings for it, and why.
    NotScanned { digest: String, reason: String },
}

impl ManifestScan {
    pub fn digest(&self) -> &str {
        match self {
            Self::Scanned { digest, .. } | Self::NotScanned { digest, .. } => digest,
        }
    }
}

/// How often `ScanNotFoundException` is taken for "not registered yet" after the scan
/// was started, before it counts as "ECR has no scan".
const SCAN_NOT_FOUND_GRACE: u32 = 3;

/// One poll's answer.
enum Poll {
    Wait(String),
    Done(ManifestScan),
    NotFound,
}

impl Ecr {
    /// Waits for the findings of every digest in `request`, concurrently.
    pub async fn scan_findings(
        &self,
        request: &ScanRequest<'_>,
    ) -> anyhow::Result<Vec<ManifestScan>> {
        let scans = request
            .digests
            .iter()
            .map(|digest| self.scan_one(request, digest));
        futures_util::future::try_join_all(scans).await
    }

    async fn scan_one(
        &self,
        request: &ScanRequest<'_>,
        digest: &str,
    ) -> anyhow::Result<ManifestScan> {
        let deadline = Instant::now() + request.timeout;
        let mut started = false;
        if !request.scans_on_push {
            if let Some(refused) = self.start_scan(request, digest).await? {
                return Ok(refused);
            }
            started = true;
        }
        let mut not_found = 0;
        let mut delay = request.poll.first;
        loop {
            let last = match self.poll_scan(request, digest).await? {
                Poll::Done(scan) => return Ok(scan),
                Poll::Wait(status) => status,
                // On push, ECR may not have registered the scan yet; or this repository
                // (a registry-wide filter, say) does not scan this image: start it once.
                Poll::NotFound if !started => {
                    tracing::info!("ECR has no scan of {digest} yet: starting one");
                    if let Some(refused) = self.start_scan(request, digest).await? {
                        return Ok(refused);
                    }
                    started = true;
                    "ScanNotFoundException".to_string()
                }
                Poll::NotFound if not_found < SCAN_NOT_FOUND_GRACE => {
                    not_found += 1;
                    "ScanNotFoundException".to_string()
                }
                Poll::NotFound => {
                    return Ok(ManifestScan::NotScanned {
                        digest: digest.to_string(),
                        reason: "ECR has no scan of it (ScanNotFoundException) even after \
                                 StartImageScan"
                            .into(),
                    })
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(ManifestScan::NotScanned {
                    digest: digest.to_string(),
                    reason: format!(
                        "the scan did not finish within scan-timeout ({}s; last status: {last}); \
                         raise `scan-timeout`",
                        request.timeout.as_secs()
                    ),
                });
            }
            tracing::debug!("scan of {digest}: {last}; next look in {delay:?}");
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = request.poll.next(delay);
        }
    }

    /// `StartImageScan`. `Some` when ECR cannot scan this manifest; a scan that already
    /// ran today (`LimitExceededException`) is fine: its findings are read.
    async fn start_scan(
        &self,
        request: &ScanRequest<'_>,
        digest: &str,
    ) -> anyhow::Result<Option<ManifestScan>> {
        let result = self
            .client
            .start_image_scan()
            .repository_name(request.repository)
            .set_registry_id(request.registry_id.map(ToString::to_string))
            .image_id(ImageIdentifier::builder().image_digest(digest).build())
            .send()
            .await;
        match result {
            Ok(_) => {
                tracing::info!("started ECR's scan of {digest}");
                Ok(None)
            }
            Err(err) if err.code() == Some("LimitExceededException") => Ok(None),
            Err(err) if err.code() == Some("UnsupportedImageTypeException") => {
                Ok(Some(ManifestScan::NotScanned {
                    digest: digest.to_string(),
                    reason: format!(
                        "ECR cannot scan this manifest (UnsupportedImageTypeException: {})",
                        err.message().unwrap_or("unsupported image type")
                    ),
                }))
            }
            Err(err) => Err(api_error(err)).with_context(|| {
                format!(
                    "StartImageScan failed for {digest} in `{}`",
                    request.repository
                )
            }),
        }
    }

    /// One `DescribeImageScanFindings`, with every page when the scan is complete.
    async fn poll_scan(&self, request: &ScanRequest<'_>, digest: &str) -> anyhow::Result<Poll> {
        let mut findings = Vec::new();
        let mut scan_type = ScanType::Basic;
        let mut next_token = None;
        loop {
            let result = self
                .client
                .describe_image_scan_findings()
                .repository_name(request.repository)
                .set_registry_id(request.registry_id.map(ToString::to_string))
                .image_id(ImageIdentifier::builder().image_digest(digest).build())
                .set_next_token(next_token.take())
                .send()
                .await;
            let page = match result {
                Ok(page) => page,
                Err(err) if err.code() == Some("ScanNotFoundException") => {
                    return Ok(Poll::NotFound)
                }
                Err(err) => {
                    return Err(api_error(err)).with_context(|| {
                        format!(
                            "DescribeImageScanFindings failed for {digest} in `{}`",
                            request.repository
                        )
                    })
                }
            };
            let status = page.image_scan_status().and_then(|s| s.status().cloned());
            let description = page
                .image_scan_status()
                .and_then(|s| s.description())
                .unwrap_or_default()
                .to_string();
            match status {
                Some(ScanStatus::Complete | ScanStatus::Active) => {}
                Some(ScanStatus::InProgress | ScanStatus::Pending) | None => {
                    let name = status.as_ref().map_or("no status", ScanStatus::as_str);
                    return Ok(Poll::Wait(name.to_string()));
                }
                Some(other) => {
                    return Ok(Poll::Done(ManifestScan::NotScanned {
                        digest: digest.to_string(),
                        reason: format!(
                            "ECR's scan ended {}{}",
                            other.as_str(),
                            if description.is_empty() {
                                String::new()
                            } else {
                                format!(": {description}")
                            }
                        ),
                    }))
                }
            }
            let (page_type, page_findings) = read_findings(&page);
            if page_type == ScanType::Enhanced {
                scan_type = ScanType::Enhanced;
            }
            findings.extend(page_findings);
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_string()),
                _ => break,
            }
        }
        Ok(Poll::Done(ManifestScan::Scanned {
            digest: digest.to_string(),
            scan_type,
            findings,
        }))
    }
}

/// The findings of one page: enhanced when ECR sent `enhancedFindings` and no
/// `findings`, basic otherwise.
fn read_findings(page: &DescribeImageScanFindingsOutput) -> (ScanType, Vec<Finding>) {
    let Some(scan) = page.image_scan_findings() else {
        return (ScanType::Basic, Vec::new());
    };
    if scan.findings.is_none() && scan.enhanced_findings.is_some() {
        let findings = scan
            .enhanced_findings()
            .iter()
            .map(|f| {
                let details = f.package_vulnerability_details();
                let package = details.and_then(|d| d.vulnerable_packages().first());
                Finding {
                    name: details
                        .and_then(|d| d.vulnerability_id())
                        .or_else(|| f.title())
                        .unwrap_or("unnamed finding")
                        .to_string(),
                    severity: Severity::from_ecr(f.severity().unwrap_or_default()),
                    package: package.and_then(|p| p.name()).map(ToString::to_string),
                    version: package.and_then(|p| p.version()).map(ToString::to_string),
                    uri: details
                        .and_then(|d| d.source_url())
                        .map(ToString::to_string),
                }
            })
            .collect();
        return (ScanType::Enhanced, findings);
    }
    let findings = scan
        .findings()
        .iter()
        .map(|f| {
            let attribute = |key: &str| {
                f.attributes()
                    .iter()
                    .find(|a| a.key() == key)
                    .and_then(|a| a.value())
                    .map(ToString::to_string)
            };
            Finding {
                name: f.name().unwrap_or("unnamed finding").to_string(),
                severity: Severity::from_ecr(f.severity().map_or("UNDEFINED", |s| s.as_str())),
                package: attribute("package_name"),
                version: attribute("package_version"),
                uri: f.uri().map(ToString::to_string),
            }
        })
        .collect();
    (ScanType::Basic, findings)
}
