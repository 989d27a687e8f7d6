//! The scan gate end to end: the action waits for ECR's findings on the pushed image
//! (moto's, or answers the front scripts per repository: `IN_PROGRESS` before `COMPLETE`,
//! `FAILED`, `ScanNotFoundException`, enhanced findings), and passes or fails the step.
//!
//! `STANDIN_SCAN_API` (an ECR API endpoint) and `STANDIN_SCAN_CONTROL` (its control URL)
//! point these tests at a second front, e.g. one started from a newer front.py next to
//! the shared stand-in; unset, they use the stand-in's own.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{standin, unique, Workspace};

fn control_url() -> String {
    std::env::var("STANDIN_SCAN_CONTROL").unwrap_or_else(|_| standin().var("STANDIN_FAULTS_URL"))
}

/// Gives `repository` a script of scan answers (tests/standin/front.py `Scans`).
fn script(repository: &str, script: &serde_json::Value) {
    let mut body = script.clone();
    body["repository"] = repository.into();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-f",
            "-X",
            "POST",
            &format!("{}/scans", control_url()),
        ])
        .args(["--data-binary", &body.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How often each scan call reached the front for `repository`.
fn calls(repository: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-f",
            &format!("{}/scans?repository={repository}", control_url()),
        ])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn scan_run(repo: &str, inputs: &[(&str, &str)]) -> support::RunResult {
    let ws = Workspace::new();
    ws.write("Dockerfile", "FROM local/busybox:latest\nCMD [\"true\"]\n");
    let mut action = standin()
        .action(ws.path())
        .input("repository", repo)
        .input("tags", "v1")
        .input("scan", "wait");
    if let Ok(api) = std::env::var("STANDIN_SCAN_API") {
        action = action.env("AWS_ENDPOINT_URL_ECR", &api);
    }
    for (name, value) in inputs {
        action = action.input(name, value);
    }
    action.run()
}

fn findings(run: &support::RunResult) -> serde_json::Value {
    serde_json::from_str(run.output("scan-findings")).unwrap()
}

/// A finding at the gate fails the step with one error line (counts, worst finding,
/// the digest), writes no outputs, keeps the image in ECR, and the summary names the
/// digest and lists the finding.
#[test]
fn gate_fails_on_a_high_finding_and_keeps_the_image() {
    let standin = standin();
    let repo = unique("scan/fail");
    let run = scan_run(&repo, &[("scan-fail-on", "HIGH")]);
    assert!(!run.success, "{}", run.stderr);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    let digest = standin
        .moto_digest(&repo, "v1")
        .expect("the image stays in ECR");
    for part in [
        "1 finding(s) at HIGH or worse",
        "HIGH 1",
        "CVE-9999-9999 (HIGH, moto_fake 9.9.9)",
        &digest,
    ] {
        assert!(errors[0].contains(part), "{part}: {}", errors[0]);
    }
    assert!(
        run.output_file.is_empty(),
        "no outputs: {}",
        run.output_file
    );
    assert!(run.summary.contains(&digest), "{}", run.summary);
    assert!(
        run.summary.contains("| HIGH | [CVE-9999-9999]("),
        "{}",
        run.summary
    );
    assert!(run.summary.contains("basic scanning"), "{}", run.summary);
}

/// Regression: "a re-run skips the scan gate". The gate fails a push and the image stays
/// in ECR under its tag; a re-run with `on-tag-exists: skip` finds every tag at that
/// image and builds nothing, but must fail the same way, writing no outputs, and the
/// summary must say the gate applied to the existing image. Before, it succeeded and
/// output the image the gate had rejected.
#[test]
fn a_rerun_with_skip_does_not_bypass_the_scan_gate() {
    let repo = unique("scan/skip-rerun");
    let first = scan_run(&repo, &[("scan-fail-on", "HIGH")]);
    assert!(!first.success, "{}", first.stderr);
    let rerun = scan_run(
        &repo,
        &[("scan-fail-on", "HIGH"), ("on-tag-exists", "skip")],
    );
    assert!(!rerun.success, "the gate still applies: {}", rerun.stderr);
    assert!(
        !rerun.stderr.contains(support::BUILD_STARTED),
        "skip builds nothing"
    );
    let errors = rerun.error_lines();
    assert_eq!(errors.len(), 1, "{}", rerun.stderr);
    assert!(errors[0].contains("CVE-9999-9999"), "{}", errors[0]);
    assert!(
        rerun.output_file.is_empty(),
        "no outputs: {}",
        rerun.output_file
    );
    assert!(
        rerun
            .summary
            .contains("Already in ECR, not rebuilt, and the scan gate failed for"),
        "{}",
        rerun.summary
    );
}

/// Below the gate the step passes; `scan-findings` counts by severity.
#[test]
fn gate_passes_below_its_severity() {
    let repo = unique("scan/pass");
    let run = scan_run(&repo, &[("scan-fail-on", "CRITICAL")]);
    run.assert_success();
    let counts = findings(&run);
    assert_eq!(counts["HIGH"], 1);
    assert_eq!(counts["CRITICAL"], 0);
    assert!(run.summary.contains("moto_fake"), "{}", run.summary);
}

/// An ignored finding leaves the gate and the counts; an ignore that matches nothing
/// is a warning; a repository that does not scan on push gets `StartImageScan`.
#[test]
fn ignores_pass_the_gate_and_stale_ignores_warn() {
    let repo = unique("scan/ignore");
    let run = scan_run(
        &repo,
        &[
            ("scan-fail-on", "LOW"),
            ("scan-ignore", "CVE-9999-9999\nCVE-2000-0001"),
            ("scan-on-push", "false"),
        ],
    );
    run.assert_success();
    assert_eq!(findings(&run)["HIGH"], 0);
    let warning = run
        .stderr
        .lines()
        .find(|l| l.starts_with("::warning::") && l.contains("CVE-2000-0001"));
    assert!(warning.is_some(), "{}", run.stderr);
    assert!(!run
        .stderr
        .contains("::warning::`scan-ignore` lists `CVE-9999-9999`"));
    assert!(
        run.stderr.contains("started ECR's scan of"),
        "{}",
        run.stderr
    );
}

/// `IN_PROGRESS` twice, then `COMPLETE` with Inspector's enhanced findings: the action
/// waits, reads `enhancedFindings`, and the summary says enhanced scanning.
#[test]
fn waits_through_in_progress_and_reads_enhanced_findings() {
    let repo = unique("scan/wait");
    script(
        &repo,
        &serde_json::json!({"describe": [
            {"status": "IN_PROGRESS"},
            {"status": "IN_PROGRESS"},
            {"status": "COMPLETE", "enhancedFindings": [{
                "severity": "MEDIUM", "title": "CVE-2024-1111 - zlib",
                "packageVulnerabilityDetails": {
                    "vulnerabilityId": "CVE-2024-1111",
                    "sourceUrl": "https://nvd.nist.gov/vuln/detail/CVE-2024-1111",
                    "vulnerablePackages": [{"name": "zlib", "version": "1.2.13"}]}}]}
        ]}),
    );
    let run = scan_run(&repo, &[("scan-fail-on", "HIGH")]);
    run.assert_success();
    assert_eq!(findings(&run)["MEDIUM"], 1);
    assert_eq!(findings(&run)["HIGH"], 0);
    assert!(run.summary.contains("enhanced scanning"), "{}", run.summary);
    assert!(run.summary.contains("| MEDIUM | [CVE-2024-1111](https://nvd.nist.gov/vuln/detail/CVE-2024-1111) | zlib | 1.2.13 |"), "{}", run.summary);
    assert!(calls(&repo)["describe"].as_u64().unwrap() >= 3);
}

/// A scan that never finishes ends at `scan-timeout` with the last status, failing the
/// gate; it does not wait longer.
#[test]
fn scan_timeout_fails_the_gate() {
    let repo = unique("scan/timeout");
    script(
        &repo,
        &serde_json::json!({"describe": [{"status": "IN_PROGRESS"}]}),
    );
    let started = Instant::now();
    let run = scan_run(
        &repo,
        &[("scan-fail-on", "CRITICAL"), ("scan-timeout", "5s")],
    );
    assert!(!run.success);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("did not finish within scan-timeout (5s; last status: IN_PROGRESS)"),
        "{}",
        errors[0]
    );
    assert!(started.elapsed() < Duration::from_secs(120));
}

/// A `FAILED` scan is reported, not passed: the gate fails naming the status.
#[test]
fn failed_scan_fails_the_gate() {
    let repo = unique("scan/failed");
    script(
        &repo,
        &serde_json::json!({"describe": [
            {"status": "FAILED", "description": "UnsupportedImageError: The operating system is not supported"}
        ]}),
    );
    let run = scan_run(&repo, &[("scan-fail-on", "CRITICAL")]);
    assert!(!run.success);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("ECR's scan ended FAILED: UnsupportedImageError"),
        "{}",
        errors[0]
    );
    assert!(run.output_file.is_empty());
}

/// `ScanNotFoundException` even after `StartImageScan` is reported, not passed; with
/// `scan-fail-on: none` it is a warning and the step passes with empty counts.
#[test]
fn scan_not_found_is_reported() {
    let repo = unique("scan/notfound");
    script(
        &repo,
        &serde_json::json!({"describe": [{"error": "ScanNotFoundException", "message": "Image scan does not exist"}]}),
    );
    let run = scan_run(&repo, &[("scan-fail-on", "HIGH")]);
    assert!(!run.success);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("ScanNotFoundException) even after StartImageScan"),
        "{}",
        errors[0]
    );
    assert!(calls(&repo)["start"].as_u64().unwrap() >= 1);

    let repo = unique("scan/notfound-warn");
    script(
        &repo,
        &serde_json::json!({"describe": [{"error": "ScanNotFoundException"}]}),
    );
    let run = scan_run(&repo, &[]);
    run.assert_success();
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("::warning::") && l.contains("was not scanned")),
        "{}",
        run.stderr
    );
    assert_eq!(findings(&run)["HIGH"], 0);
}

/// A manifest ECR cannot scan (`StartImageScan`'s `UnsupportedImageTypeException`) fails the
/// gate with the reason.
#[test]
fn unscannable_manifest_fails_the_gate() {
    let repo = unique("scan/unsupported");
    script(
        &repo,
        &serde_json::json!({"start": [{"error": "UnsupportedImageTypeException", "message": "The operation is not supported for this image type."}]}),
    );
    let run = scan_run(
        &repo,
        &[("scan-fail-on", "CRITICAL"), ("scan-on-push", "false")],
    );
    assert!(!run.success);
    let errors = run.error_lines();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    assert!(
        errors[0].contains("ECR cannot scan this manifest (UnsupportedImageTypeException"),
        "{}",
        errors[0]
    );
}
