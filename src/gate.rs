//! The scan gate: ECR's findings after `scan-ignore`, counted by severity, checked
//! against `scan-fail-on`, and rendered for the summary, the output and the error line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::ecr::scan::{Finding, ManifestScan};
use crate::inputs::{ScanSettings, Severity};

/// How many of the worst findings the error line names.
const WORST_SHOWN: usize = 3;
/// Rows of the summary's findings table, worst first.
const TABLE_ROWS: usize = 50;

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

    /// `{"CRITICAL":0,"HIGH":1,…}`, worst first.
    pub fn findings_json(&self) -> String {
        let mut map = serde_json::Map::new();
        for (severity, count) in &self.counts {
            map.insert(severity.as_str().to_string(), (*count).into());
        }
        serde_json::Value::Object(map).to_string()
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
