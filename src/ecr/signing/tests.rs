use std::collections::HashMap;
use std::sync::Mutex;

use super::*;

/// The API reference's examples, and the edges of `*`: empty runs, `/`, several stars,
/// backtracking, and a whole-name match.
#[test]
fn wildcards_match_as_the_api_reference_defines() {
    for (pattern, name, expected) in [
        ("myapp/*", "myapp/web", true),
        ("myapp/*", "myapp/web/api", true),
        ("myapp/*", "myapp", false),
        ("myapp/*", "other/myapp/web", false),
        ("*/production", "team/app/production", true),
        ("*/production", "production", false),
        ("*prod*", "prod", true),
        ("*prod*", "team/preprod-app", true),
        ("*prod*", "team/pro-d", false),
        ("app", "app", true),
        ("app", "app2", false),
        ("app", "my-app", false),
        ("*", "anything/at/all", true),
        ("a*b*c", "aXbYbZc", true),
        ("a*b*c", "aXbYbZ", false),
        ("a*a*a", "aaa", true),
        ("a*a*a", "aa", false),
        ("**", "x", true),
        ("team/*-svc", "team/a-svc-svc", true),
    ] {
        assert_eq!(
            crate::ecr::repository::wildcard_matches(pattern, name),
            expected,
            "`{pattern}` against `{name}`"
        );
    }
}

fn rule(profile: &str, filters: &[&str]) -> SigningRule {
    SigningRule {
        profile_arn: profile.into(),
        filters: filters
            .iter()
            .map(|f| RepositoryFilter {
                filter: (*f).into(),
                kind: WILDCARD_MATCH.into(),
            })
            .collect(),
    }
}

/// A rule covers a repository when it has no filter or any filter matches; a filter of a
/// type ECR may add later matches nothing.
#[test]
fn rules_cover_repositories_by_any_filter() {
    assert!(rule("p", &[]).covers("any/repository"));
    let both = rule("p", &["myapp/*", "*prod*"]);
    assert!(both.covers("myapp/web"));
    assert!(both.covers("team/prod"));
    assert!(!both.covers("team/dev"));
    let future = SigningRule {
        profile_arn: "p".into(),
        filters: vec![RepositoryFilter {
            filter: "*".into(),
            kind: "PREFIX_MATCH".into(),
        }],
    };
    assert!(!future.covers("app"));
    assert_eq!(future.describe(), "p: `*` (PREFIX_MATCH)");
    assert_eq!(rule("p", &[]).describe(), "p: every repository");
    assert_eq!(both.describe(), "p: `myapp/*`, `*prod*`");
}

fn status(profile: &str, status: &str) -> ProfileStatus {
    ProfileStatus {
        profile_arn: profile.into(),
        status: status.into(),
        failure_code: None,
        failure_reason: None,
    }
}

fn failed(profile: &str) -> ProfileStatus {
    ProfileStatus {
        failure_code: Some("AccessDenied".into()),
        failure_reason: Some("the profile is revoked".into()),
        ..status(profile, "FAILED")
    }
}

/// Signed when every status is COMPLETE; pending while there is none or one is not; any
/// FAILED fails, naming the profile, digest, code and reason.
#[test]
fn statuses_are_judged() {
    assert_eq!(
        assess("sha256:a", &[]),
        Progress::Pending("no signing job yet".into())
    );
    assert_eq!(
        assess(
            "sha256:a",
            &[status("p1", "COMPLETE"), status("p2", "IN_PROGRESS")]
        ),
        Progress::Pending("p2 IN_PROGRESS".into())
    );
    assert_eq!(
        assess(
            "sha256:a",
            &[status("p1", "COMPLETE"), status("p2", "COMPLETE")]
        ),
        Progress::Signed(vec!["p1".into(), "p2".into()])
    );
    let Progress::Failed(message) = assess("sha256:a", &[status("p1", "COMPLETE"), failed("p2")])
    else {
        panic!("a FAILED status fails");
    };
    for needle in ["sha256:a", "p2", "AccessDenied", "the profile is revoked"] {
        assert!(message.contains(needle), "{message}");
    }
}

/// Statuses played back per digest, one list per poll (the last one repeated), counting
/// the polls.
#[derive(Default)]
struct Script {
    answers: Mutex<HashMap<String, Vec<Vec<ProfileStatus>>>>,
    polls: Mutex<usize>,
}

impl Script {
    fn with(self, digest: &str, answers: Vec<Vec<ProfileStatus>>) -> Self {
        self.answers
            .lock()
            .unwrap()
            .insert(digest.to_string(), answers);
        self
    }
}

impl StatusSource for Script {
    async fn statuses(
        &self,
        _repository: &str,
        _registry_id: Option<&str>,
        digest: &str,
    ) -> anyhow::Result<Vec<ProfileStatus>> {
        *self.polls.lock().unwrap() += 1;
        let mut answers = self.answers.lock().unwrap();
        let queue = answers.get_mut(digest).expect("a scripted digest");
        Ok(if queue.len() > 1 {
            queue.remove(0)
        } else {
            queue[0].clone()
        })
    }
}

const SECOND: Duration = Duration::from_secs(1);

async fn wait(
    script: &Script,
    digests: &[&str],
    timeout: Duration,
) -> anyhow::Result<Vec<ImageSignatures>> {
    let digests: Vec<String> = digests.iter().map(ToString::to_string).collect();
    wait_for(
        script,
        "team/app",
        None,
        &digests,
        &["arn:aws:signer:eu-west-1:111122223333:/signing-profiles/release".into()],
        timeout,
        SECOND,
    )
    .await
}

/// Each digest is polled until signed, and no more once it is.
#[tokio::test(start_paused = true)]
async fn waiting_ends_when_every_digest_is_signed() {
    let script = Script::default()
        .with(
            "sha256:a",
            vec![
                vec![],
                vec![status("p", "IN_PROGRESS")],
                vec![status("p", "COMPLETE")],
            ],
        )
        .with("sha256:b", vec![vec![status("p", "COMPLETE")]]);
    let signed = wait(&script, &["sha256:a", "sha256:b"], 60 * SECOND)
        .await
        .unwrap();
    assert_eq!(
        signed,
        [
            ImageSignatures {
                digest: "sha256:a".into(),
                profile_arns: vec!["p".into()],
            },
            ImageSignatures {
                digest: "sha256:b".into(),
                profile_arns: vec!["p".into()],
            },
        ]
    );
    assert_eq!(*script.polls.lock().unwrap(), 4, "b once, a three times");
}

/// A FAILED status ends the wait at once with its message.
#[tokio::test(start_paused = true)]
async fn a_failed_signing_ends_the_wait() {
    let script = Script::default().with(
        "sha256:a",
        vec![vec![status("p", "IN_PROGRESS")], vec![failed("p")]],
    );
    let err = wait(&script, &["sha256:a"], 60 * SECOND)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("the profile is revoked"), "{err}");
    assert_eq!(*script.polls.lock().unwrap(), 2);
}

/// At the timeout, the unsigned digests are named with what they wait for, and the
/// profile; signed ones are not.
#[tokio::test(start_paused = true)]
async fn a_timeout_names_what_is_still_waited_for() {
    let script = Script::default()
        .with("sha256:a", vec![vec![status("p", "IN_PROGRESS")]])
        .with("sha256:b", vec![vec![status("p", "COMPLETE")]]);
    let started = tokio::time::Instant::now();
    let err = wait(&script, &["sha256:a", "sha256:b"], 10 * SECOND)
        .await
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() <= 10 * SECOND, "{:?}", started.elapsed());
    for needle in [
        "within 10s",
        "sha256:a (p IN_PROGRESS)",
        "team/app",
        "signing-profiles/release",
    ] {
        assert!(err.contains(needle), "{err}");
    }
    assert!(!err.contains("sha256:b"), "{err}");
}
