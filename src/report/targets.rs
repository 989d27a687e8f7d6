//! The registries of a run with `also-push-to`: the `targets` output (only confirmed
//! targets), the summary's table (one row per target: bytes sent, blobs already there,
//! time), and the step's failure naming every target that failed.

use std::fmt::Write as _;

use super::{human_bytes, Report};

/// One registry the run pushed to, or tried to (the primary is the first row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRow {
    /// `<host>/<repository>`.
    pub label: String,
    /// The image's references there, one per tag, once confirmed.
    pub uris: Vec<String>,
    /// The digest its ECR API confirmed; `None` when it failed.
    pub digest: Option<String>,
    pub bytes_sent: u64,
    pub blobs_skipped: usize,
    pub time: std::time::Duration,
    /// Why it failed.
    pub error: Option<String>,
}

impl TargetRow {
    /// The row of `label` before anything is known of it.
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_string(),
            uris: Vec::new(),
            digest: None,
            bytes_sent: 0,
            blobs_skipped: 0,
            time: std::time::Duration::ZERO,
            error: None,
        }
    }
}

impl Report {
    /// The row of the target `label` (the rows follow `also-push-to`, not the pushes).
    pub fn target_row(&mut self, label: &str) -> Option<&mut TargetRow> {
        self.targets
            .iter_mut()
            .skip(1)
            .find(|row| row.label == label)
    }

    /// `targets`: every confirmed target, the primary first, to its URIs and digest. A
    /// JSON object written by hand, to keep that order (`serde_json`'s map sorts keys).
    pub(super) fn targets_output(&self) -> String {
        let mut entries: Vec<(String, serde_json::Value)> = Vec::new();
        let confirmed = matches!(
            self.outcome,
            super::Outcome::Pushed | super::Outcome::Skipped | super::Outcome::ScanFailed
        );
        if let (Some(digest), true, true) = (&self.digest, confirmed, self.targets.is_empty()) {
            entries.push((
                self.repository_uri(),
                serde_json::json!({
                    "image-uris": self.confirmed_references(),
                    "digest": digest,
                }),
            ));
        }
        for row in &self.targets {
            if let (Some(digest), None) = (&row.digest, &row.error) {
                entries.push((
                    row.label.clone(),
                    serde_json::json!({ "image-uris": row.uris, "digest": digest }),
                ));
            }
        }
        let members: Vec<String> = entries
            .iter()
            .map(|(key, value)| format!("{}:{value}", serde_json::Value::from(key.as_str())))
            .collect();
        format!("{{{}}}", members.join(","))
    }

    /// The summary's table of registries, the primary first, when the run had more than
    /// the primary.
    pub(super) fn targets_markdown(&self) -> String {
        if self.targets.is_empty() {
            return String::new();
        }
        let mut md = String::from(
            "\n#### Registries\n\n| Registry | Result | Sent | Already there | Time |\n\
             |---|---|---|---|---|\n",
        );
        for row in &self.targets {
            let result = match (&row.digest, &row.error) {
                (_, Some(error)) => format!("failed: {}", error.replace('|', "\\|")),
                (Some(digest), None) => format!("`{digest}`"),
                (None, None) => "not pushed".into(),
            };
            let _ = writeln!(
                md,
                "| `{}` | {result} | {} | {} blob(s) | {:.2} s |",
                row.label,
                human_bytes(i64::try_from(row.bytes_sent).unwrap_or(i64::MAX)),
                row.blobs_skipped,
                row.time.as_secs_f64()
            );
        }
        md
    }

    /// The step's failure when a target failed: each, with its reason.
    pub fn targets_error(&self) -> Option<anyhow::Error> {
        let failed: Vec<String> = self
            .targets
            .iter()
            .filter_map(|row| {
                row.error
                    .as_ref()
                    .map(|why| format!("{}: {why}", row.label))
            })
            .collect();
        if failed.is_empty() {
            return None;
        }
        Some(anyhow::anyhow!(
            "{} of {} registries failed (the others have the image, and the outputs list \
             them; a re-run with `on-tag-exists: skip` pushes only where it is missing): {}",
            failed.len(),
            self.targets.len(),
            failed.join("; ")
        ))
    }
}
