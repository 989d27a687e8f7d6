//! The scan gate: ECR's findings after `scan-ignore`, counted by severity, checked
//! against `scan-fail-on`, and rendered for the summary, the output and the error line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use std::time::Instant;

use crate::ecr::scan::{Finding, ManifestScan};
use crate::ecr::Ecr;
use crate::inputs::{Inputs, ScanSettings, Severity};
use crate::report::{Outcome, Report};
use crate::runner::Runner;

/// How many of the worst findings the error line names.
const WORST_SHOWN: usize = 3;
/// Rows of the summary's findings table, worst first.
const TABLE_ROWS: usize = 50;

/// Waits for ECR's findings on the pushed image and applies the gate. When the gate
/// fails, the summary (naming the image, which stays in ECR) is written here and the
/// error returned, so no outputs are written.
pub async fn wait_and_apply(
    ecr: &Ecr,
    inputs: &Inputs,
    runner: &Runner,
    report: &mut Report,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let digests = report.gated_digests();
    let Some(digest) = report.digest.clone().or_else(|| digests.first().cloned()) else {
        return Ok(());
    };
    let request = crate::ecr::scan::ScanRequest {
        repository: &inputs.repository,
        registry_id: inputs.registry_id.as_deref(),
        digests: &digests,
        scans_on_push: report
            .repository_state
            .as_ref()
            .is_some_and(|r| r.scan_on_push),
        timeout: inputs.scan.timeout,
        poll: crate::ecr::scan::Backoff::DEFAULT,
    };
    let scans = {
        let _group = runner.group(&format!("Scan of {digest}"));
        ecr.scan_findings(&request).await?
    };
    let gate = Gate::evaluate(scans, &inputs.scan);
    tracing::info!(
        "scan findings after {:.1}s: {}",
        started.elapsed().as_secs_f64(),
        gate.findings_json()
    );
    for name in &gate.stale_ignores {
        runner.warning(&format!(
            "`scan-ignore` lists `{name}`, which no finding of this image has: remove it if \
             it is fixed"
        ));
    }
    let image = format!("{}@{digest}", report.repository_uri());
    let failure = gate.failure(&image);
    if failure.is_none() {
        for (digest, reason) in gate.not_scanned() {
            runner.warning(&format!("{digest} was not scanned: {reason}"));
        }
    }
    report.scan = Some(gate);
    match failure {
        None => Ok(()),
        Some(line) => {
            report.outcome = Outcome::ScanFailed;
            runner.write_summary(&report.summary_markdown())?;
            Err(anyhow::anyhow!(line))
        }
    }
}

/// The gate's view of a run's scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub scans: Vec<ManifestScan>,
    /// Findings left after the ignores, worst first, with their manifest's digest.
    pub findings: Vec<(String, Finding)>,
    /// Findings by severity after the ignores (every severity present, zeros included).
    pub counts: BTreeMap<Severity, usize>,
    /// Ignored names that matched no finding.
    pub stale_ignores: Vec<String>,
    pub fail_on: Option<Severity>,
}

impl Gate {
    pub fn evaluate(scans: Vec<ManifestScan>, settings: &ScanSettings) -> Self {
        let mut findings = Vec::new();
        let mut matched = std::collections::BTreeSet::new();
        for scan in &scans {
            if let ManifestScan::Scanned {
                digest,
                findings: all,
                ..
            } = scan
            {
                for finding in all {
                    if settings.ignore.contains(&finding.name) {
                        matched.insert(finding.name.clone());
                    } else {
                        findings.push((digest.clone(), finding.clone()));
                    }
                }
            }
        }
        findings.sort_by(|a, b| {
            a.1.severity
                .cmp(&b.1.severity)
                .then(a.1.name.cmp(&b.1.name))
        });
        let mut counts: BTreeMap<Severity, usize> = Severity::GATES
            .into_iter()
            .chain([Severity::Undefined])
            .map(|s| (s, 0))
            .collect();
        for (_, finding) in &findings {
            *counts.entry(finding.severity).or_default() += 1;
        }
        let stale_ignores = settings
            .ignore
            .iter()
            .filter(|name| !matched.contains(*name))
            .cloned()
            .collect();
        Self {
            scans,
            findings,
            counts,
            stale_ignores,
            fail_on: settings.fail_on,
        }
    }

    /// `{"CRITICAL":0,"HIGH":1,…}`, worst first (a `serde_json` map would sort the keys).
    pub fn findings_json(&self) -> String {
        let fields: Vec<String> = self
            .counts
            .iter()
            .map(|(severity, count)| format!("\"{}\":{count}", severity.as_str()))
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    /// `CRITICAL 0, HIGH 1, …`
    fn counts_text(&self) -> String {
        self.counts
            .iter()
            .map(|(s, n)| format!("{} {n}", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Manifests ECR gave no findings for, with the reason.
    pub fn not_scanned(&self) -> impl Iterator<Item = (&str, &str)> {
        self.scans.iter().filter_map(|scan| match scan {
            ManifestScan::NotScanned { digest, reason } => Some((digest.as_str(), reason.as_str())),
            ManifestScan::Scanned { .. } => None,
        })
    }

    /// Why the gate fails, as one line; `None` when it passes. `image` names the image
    /// in ECR (`<repository-uri>@<digest>`), which stays there.
    pub fn failure(&self, image: &str) -> Option<String> {
        let fail_on = self.fail_on?;
        let unscanned: Vec<String> = self
            .not_scanned()
            .map(|(digest, reason)| format!("{digest}: {reason}"))
            .collect();
        let over = self
            .findings
            .iter()
            .filter(|(_, f)| f.severity <= fail_on)
            .count();
        if over == 0 && unscanned.is_empty() {
            return None;
        }
        let mut line = String::from("scan gate failed: ");
        if over > 0 {
            let worst = self
                .findings
                .iter()
                .take(WORST_SHOWN)
                .map(|(_, f)| describe(f))
                .collect::<Vec<_>>()
                .join("; ");
            let _ = write!(
                line,
                "{over} finding(s) at {} or worse ({}); worst: {worst}",
                fail_on.as_str(),
                self.counts_text()
            );
        }
        if !unscanned.is_empty() {
            if over > 0 {
                line.push_str("; ");
            }
            let _ = write!(
                line,
                "not scanned, so not checked: {}",
                unscanned.join("; ")
            );
        }
        let _ = write!(
            line,
            ". The image stays in ECR as {image}; fix or `scan-ignore` the findings, or set \
             `scan-fail-on`"
        );
        Some(line)
    }

    /// The findings section of the job summary.
    pub fn summary_markdown(&self, repository_uri: &str) -> String {
        let mut md = String::from("#### Scan findings\n\n");
        for scan in &self.scans {
            match scan {
                ManifestScan::Scanned {
                    digest,
                    scan_type,
                    findings,
                } => {
                    let _ = writeln!(
                        md,
                        "- `{repository_uri}@{digest}`: {} finding(s), by {}",
                        findings.len(),
                        scan_type.as_str()
                    );
                }
                ManifestScan::NotScanned { digest, reason } => {
                    let _ = writeln!(
                        md,
                        "- `{repository_uri}@{digest}`: **not scanned**: {reason}"
                    );
                }
            }
        }
        let _ = writeln!(md, "\n{}", self.counts_text());
        if !self.findings.is_empty() {
            md.push_str("\n| Severity | Name | Package | Version |\n|---|---|---|---|\n");
            for (_, finding) in self.findings.iter().take(TABLE_ROWS) {
                let name = match &finding.uri {
                    Some(uri) => format!("[{}]({uri})", finding.name),
                    None => finding.name.clone(),
                };
                let _ = writeln!(
                    md,
                    "| {} | {name} | {} | {} |",
                    finding.severity.as_str(),
                    finding.package.as_deref().unwrap_or(""),
                    finding.version.as_deref().unwrap_or("")
                );
            }
            if self.findings.len() > TABLE_ROWS {
                let _ = writeln!(md, "\n{} more not shown.", self.findings.len() - TABLE_ROWS);
            }
        }
        if !self.stale_ignores.is_empty() {
            let _ = writeln!(
                md,
                "\nIgnored but not found: {}",
                self.stale_ignores.join(", ")
            );
        }
        md.push('\n');
        md
    }
}

/// `CVE-9999-9999 (HIGH, moto_fake 9.9.9)`
fn describe(finding: &Finding) -> String {
    let package = match (&finding.package, &finding.version) {
        (Some(p), Some(v)) => format!(", {p} {v}"),
        (Some(p), None) => format!(", {p}"),
        _ => String::new(),
    };
    format!("{} ({}{package})", finding.name, finding.severity.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecr::scan::ScanType;

    fn finding(name: &str, severity: Severity) -> Finding {
        Finding {
            name: name.into(),
            severity,
            package: Some("openssl".into()),
            version: Some("3.0.1".into()),
            uri: None,
        }
    }

    fn settings(fail_on: Option<Severity>, ignore: &[&str]) -> ScanSettings {
        ScanSettings {
            wait: true,
            fail_on,
            ignore: ignore.iter().map(ToString::to_string).collect(),
            timeout: std::time::Duration::from_secs(60),
        }
    }

    fn scans() -> Vec<ManifestScan> {
        vec![
            ManifestScan::Scanned {
                digest: "sha256:amd64".into(),
                scan_type: ScanType::Basic,
                findings: vec![
                    finding("CVE-1", Severity::Low),
                    finding("CVE-2", Severity::Critical),
                ],
            },
            ManifestScan::Scanned {
                digest: "sha256:arm64".into(),
                scan_type: ScanType::Enhanced,
                findings: vec![finding("CVE-3", Severity::Medium)],
            },
        ]
    }

    /// Counts cover every platform's manifest after ignores; the error line names the
    /// worst finding first and the image; stale ignores are listed.
    #[test]
    fn counts_ignores_and_the_failure_line() {
        let gate = Gate::evaluate(
            scans(),
            &settings(Some(Severity::Medium), &["CVE-3", "CVE-9"]),
        );
        assert_eq!(
            gate.findings_json(),
            r#"{"CRITICAL":1,"HIGH":0,"MEDIUM":0,"LOW":1,"INFORMATIONAL":0,"UNDEFINED":0}"#
        );
        assert_eq!(gate.stale_ignores, ["CVE-9"]);
        let line = gate.failure("r/app@sha256:x").unwrap();
        assert!(line.contains("1 finding(s) at MEDIUM or worse"), "{line}");
        assert!(
            line.contains("worst: CVE-2 (CRITICAL, openssl 3.0.1); CVE-1"),
            "{line}"
        );
        assert!(line.contains("r/app@sha256:x"), "{line}");
        assert!(!line.contains('\n'));
        let summary = gate.summary_markdown("r/app");
        assert!(summary.contains("`r/app@sha256:arm64`: 1 finding(s), by enhanced scanning"));
    }

    /// `none` never fails; an unscanned manifest fails a set gate, even with no findings.
    #[test]
    fn none_passes_and_unscanned_fails_a_set_gate() {
        assert!(Gate::evaluate(scans(), &settings(None, &[]))
            .failure("x")
            .is_none());
        let unscanned = vec![ManifestScan::NotScanned {
            digest: "sha256:index".into(),
            reason: "ECR cannot scan this manifest".into(),
        }];
        let gate = Gate::evaluate(unscanned.clone(), &settings(Some(Severity::Critical), &[]));
        assert!(gate
            .failure("x")
            .unwrap()
            .contains("not scanned, so not checked: sha256:index"));
        assert!(Gate::evaluate(unscanned, &settings(None, &[]))
            .failure("x")
            .is_none());
    }
}
