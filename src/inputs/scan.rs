//! The scan gate's inputs: `scan`, `scan-fail-on`, `scan-ignore`, `scan-timeout`.

use std::time::Duration;

use super::{validate, InputError, Raw};

/// A finding's severity, as ECR names it, worst first when sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Critical,
    High,
    Medium,
    Low,
    Informational,
    /// ECR's `UNDEFINED` and Inspector's `UNTRIAGED`: below every gate.
    Undefined,
}

impl Severity {
    /// The severities a gate can be set at, worst first.
    pub const GATES: [Self; 5] = [
        Self::Critical,
        Self::High,
        Self::Medium,
        Self::Low,
        Self::Informational,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "CRITICAL",
            Self::High => "HIGH",
            Self::Medium => "MEDIUM",
            Self::Low => "LOW",
            Self::Informational => "INFORMATIONAL",
            Self::Undefined => "UNDEFINED",
        }
    }

    /// ECR's and Inspector's names; anything else counts as undefined.
    pub fn from_ecr(name: &str) -> Self {
        match name.to_ascii_uppercase().as_str() {
            "CRITICAL" => Self::Critical,
            "HIGH" => Self::High,
            "MEDIUM" => Self::Medium,
            "LOW" => Self::Low,
            "INFORMATIONAL" => Self::Informational,
            _ => Self::Undefined,
        }
    }
}

/// The scan gate: wait for ECR's findings after the push, and fail on some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSettings {
    /// `scan: wait`; `false` (`off`) skips everything below.
    pub wait: bool,
    /// Fail when a finding at this severity or worse remains; `None` never fails on one.
    pub fail_on: Option<Severity>,
    /// Finding names (CVE ids) left out.
    pub ignore: Vec<String>,
    pub timeout: Duration,
}

/// `scan`, `scan-fail-on`, `scan-ignore` and `scan-timeout`.
pub(super) fn parse(raw: &Raw<'_>) -> Result<ScanSettings, InputError> {
    let mode = raw.get("scan");
    let wait = match mode.to_ascii_lowercase().as_str() {
        "off" => false,
        "wait" => true,
        _ => {
            return Err(InputError::invalid(
                "scan",
                &mode,
                "expected `off` or `wait`",
            ))
        }
    };
    let fail_on_text = raw.get("scan-fail-on");
    let fail_on = match fail_on_text.to_ascii_uppercase().as_str() {
        "NONE" => None,
        other => Some(
            Severity::GATES
                .into_iter()
                .find(|s| s.as_str() == other)
                .ok_or_else(|| {
                    InputError::invalid(
                        "scan-fail-on",
                        &fail_on_text,
                        "expected `none`, `CRITICAL`, `HIGH`, `MEDIUM`, `LOW` or `INFORMATIONAL`",
                    )
                })?,
        ),
    };
    let ignore_text = raw.get("scan-ignore");
    let mut ignore: Vec<String> = Vec::new();
    for name in ignore_text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        if name.chars().any(char::is_whitespace) {
            return Err(InputError::invalid(
                "scan-ignore",
                name,
                "a finding name (e.g. `CVE-2024-1234`) has no white space",
            ));
        }
        if !ignore.iter().any(|n| n == name) {
            ignore.push(name.to_string());
        }
    }
    let timeout_text = raw.get("scan-timeout");
    let timeout = validate::duration(&timeout_text)
        .map_err(|reason| InputError::invalid("scan-timeout", &timeout_text, reason))?;
    Ok(ScanSettings {
        wait,
        fail_on,
        ignore,
        timeout,
    })
}
