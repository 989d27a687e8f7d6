use super::*;

fn report(pushed: bool) -> Report {
    Report {
        registry: "1.dkr.ecr.r.amazonaws.com".into(),
        repository: "team/app".into(),
        references: vec![
            "1.dkr.ecr.r.amazonaws.com/team/app:v1".into(),
            "1.dkr.ecr.r.amazonaws.com/team/app:latest".into(),
        ],
        outcome: if pushed {
            Outcome::Pushed
        } else {
            Outcome::BuiltOnly
        },
        digest: pushed.then(|| "sha256:abc".into()),
        image_id: "sha256:def".into(),
        pushed_size_bytes: pushed.then_some(1_234_567),
        local_size_bytes: Some(4_000_000),
        repository_state: None,
        policies: vec![],
        build_time: Some(Duration::from_millis(1500)),
        push_time: None,
        builder: Some(BuilderKind::Buildkit),
        cache: Some(CacheStats {
            cached_steps: 3,
            steps: 4,
        }),
        push_engine: None,
        blobs: None,
        platform: None,
        platforms: Vec::new(),
        scan: None,
        moved_tags: Vec::new(),
        leg: None,
        attachments: crate::publish::attach::Attachments::default(),
        signing_key: None,
        ecr_signatures: Vec::new(),
        started_at: 0,
        targets: Vec::new(),
    }
}

/// Outputs follow the documented formats, in action.yml's order.
#[test]
fn outputs_have_the_documented_shapes() {
    let outputs = report(true).outputs();
    let get = |name: &str| outputs.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    assert_eq!(get("registry"), "1.dkr.ecr.r.amazonaws.com");
    assert_eq!(get("repository-uri"), "1.dkr.ecr.r.amazonaws.com/team/app");
    assert_eq!(get("image-uri"), "1.dkr.ecr.r.amazonaws.com/team/app:v1");
    assert_eq!(
        get("image-uri-by-digest"),
        "1.dkr.ecr.r.amazonaws.com/team/app@sha256:abc"
    );
    let uris: Vec<String> = serde_json::from_str(&get("image-uris")).unwrap();
    assert_eq!(uris.len(), 2);
    let names: Vec<_> = outputs.iter().map(|(n, _)| *n).collect();
    let spec = crate::inputs::ActionSpec::embedded();
    let declared: Vec<_> = spec.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, declared);
}

/// Regression: "outputs name tags that moved". A tag ECR shows at another image is
/// left out of `image-uris`; when it is the first tag, `image-uri` names the image by
/// digest; the warning says both.
#[test]
fn moved_tags_are_left_out_of_the_outputs() {
    let mut moved_second = report(true);
    let warning = moved_second
        .leave_out_moved_tags(&["latest".to_string()])
        .unwrap();
    assert!(
        warning.contains("latest") && warning.contains("sha256:abc"),
        "{warning}"
    );
    assert!(!warning.contains("by digest"), "{warning}");
    let outputs = moved_second.outputs();
    let get = |name: &str| outputs.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    assert_eq!(get("image-uri"), "1.dkr.ecr.r.amazonaws.com/team/app:v1");
    assert_eq!(
        get("image-uris"),
        r#"["1.dkr.ecr.r.amazonaws.com/team/app:v1"]"#
    );

    let mut moved_first = report(true);
    let warning = moved_first
        .leave_out_moved_tags(&["v1".to_string()])
        .unwrap();
    assert!(warning.contains("by digest"), "{warning}");
    let outputs = moved_first.outputs();
    let get = |name: &str| outputs.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    assert_eq!(
        get("image-uri"),
        "1.dkr.ecr.r.amazonaws.com/team/app@sha256:abc"
    );
    assert_eq!(
        get("image-uris"),
        r#"["1.dkr.ecr.r.amazonaws.com/team/app:latest"]"#
    );
    assert!(report(true).leave_out_moved_tags(&[]).is_none());
}

/// A build-only run has no digest and pushed nothing.
#[test]
fn build_only_outputs_are_empty_where_nothing_was_pushed() {
    let outputs = report(false).outputs();
    let get = |name: &str| outputs.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    assert_eq!(get("image-digest"), "");
    assert_eq!(get("image-uris"), "[]");
    assert!(report(false).summary_markdown().contains("not pushed"));
    assert!(report(true)
        .summary_markdown()
        .contains("| Builder | BuildKit: 3 of 4 steps cached |"));
}

/// A repository that ECR creates on push shows the template it comes from, its
/// settings with the exclusion filters, and the policies left to the template.
#[test]
fn the_summary_names_the_template_of_a_repository_created_on_push() {
    let mut report = report(true);
    report.repository_state = Some(Repository {
        uri: String::new(),
        registry_id: "1".into(),
        created: false,
        tag_mutability: "IMMUTABLE_WITH_EXCLUSION".into(),
        tag_mutability_exclusions: vec!["latest".into(), "dev-*".into()],
        scan_on_push: false,
        encryption: "AES256".into(),
        created_on_push: Some("team".into()),
    });
    report.policies = vec![(
        "Lifecycle policy".into(),
        PolicyOutcome::FromTemplate("team".into()),
    )];
    let md = report.summary_markdown();
    for row in [
        "| Repository | `1.dkr.ecr.r.amazonaws.com/team/app` (created on push by ECR from \
         the repository creation template `team`) |",
        "| Tag mutability | IMMUTABLE_WITH_EXCLUSION (exclusions: `latest`, `dev-*`) |",
        "| Scan on push | as the registry's scanning configuration says |",
        "| Lifecycle policy | not applied: the repository creation template `team`'s \
         applies |",
    ] {
        assert!(md.contains(row), "{row}\n{md}");
    }
}

fn target_row(label: &str, digest: Option<&str>, error: Option<&str>) -> targets::TargetRow {
    targets::TargetRow {
        label: label.into(),
        uris: digest
            .map(|_| vec![format!("{label}:v1")])
            .unwrap_or_default(),
        digest: digest.map(Into::into),
        bytes_sent: 2_000_000,
        blobs_skipped: 3,
        time: Duration::from_millis(1500),
        error: error.map(Into::into),
    }
}

/// `targets` names only the registries that confirmed the image, the primary first; the
/// summary has a row for each, a failed one with its reason; a failed one fails the step.
#[test]
fn targets_lists_only_the_confirmed_registries_primary_first() {
    let mut report = report(true);
    // One registry: the primary alone.
    let alone: serde_json::Value = serde_json::from_str(
        &report
            .outputs()
            .into_iter()
            .find(|(n, _)| *n == "targets")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(
        alone["1.dkr.ecr.r.amazonaws.com/team/app"]["digest"],
        "sha256:abc"
    );
    assert_eq!(
        alone["1.dkr.ecr.r.amazonaws.com/team/app"]["image-uris"][1],
        "1.dkr.ecr.r.amazonaws.com/team/app:latest"
    );
    report.targets = vec![
        target_row(
            "1.dkr.ecr.r.amazonaws.com/team/app",
            Some("sha256:abc"),
            None,
        ),
        target_row(
            "2.dkr.ecr.s.amazonaws.com/team/app",
            Some("sha256:abc"),
            None,
        ),
        target_row(
            "3.dkr.ecr.t.amazonaws.com/team/app",
            None,
            Some("DENIED: no"),
        ),
    ];
    let text = report
        .outputs()
        .into_iter()
        .find(|(n, _)| *n == "targets")
        .unwrap()
        .1;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(map.len(), 2, "{text}");
    let first = text.find("1.dkr.ecr.r.amazonaws.com/team/app").unwrap();
    let second = text.find("2.dkr.ecr.s.amazonaws.com/team/app").unwrap();
    assert!(first < second, "{text}");
    assert_eq!(
        map["2.dkr.ecr.s.amazonaws.com/team/app"]["image-uris"][0],
        "2.dkr.ecr.s.amazonaws.com/team/app:v1"
    );
    let summary = report.summary_markdown();
    assert!(summary.contains("| `3.dkr.ecr.t.amazonaws.com/team/app` | failed: DENIED: no | 2.0 MB | 3 blob(s) | 1.50 s |"), "{summary}");
    let err = report
        .targets_error()
        .expect("a failed target fails the step");
    let err = err.to_string();
    assert!(err.starts_with("1 of 3 registries failed"), "{err}");
    assert!(
        err.contains("3.dkr.ecr.t.amazonaws.com/team/app: DENIED: no"),
        "{err}"
    );
    report.targets.pop();
    assert!(report.targets_error().is_none());
}
