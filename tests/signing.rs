//! Signing, end to end on the stand-in, checked by the real tools: `sign: kms` (a KMS key
//! in the stand-in's KMS) verified by Debian's `cosign` (`verify` and `verify-attestation
//! --type slsaprovenance1`, `--key awskms://…`), for one image and for an index; a key
//! denied `kms:Sign` failing before the build; a referrer the registry refuses failing a
//! signed run; and `sign: ecr`, ECR's managed signing, with `COMPLETE`, `FAILED` and a
//! timeout.

mod support;

use std::process::Command;

use support::{own_access_key, standin, unique, RunResult, Standin, Workspace};

fn workspace() -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!(
            "FROM local/busybox:latest\nRUN echo {} > /marker\n",
            unique("signed")
        ),
    );
    ws
}

/// A P-256 signing key in the stand-in's KMS under a new alias; the alias.
fn create_key(standin: &Standin) -> String {
    let key = standin.moto_kms(
        "CreateKey",
        &serde_json::json!({"KeyUsage": "SIGN_VERIFY", "KeySpec": "ECC_NIST_P256"}),
    );
    let key_id = key["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap_or_else(|| panic!("no key: {key}"));
    let alias = format!("alias/{}", unique("signing"));
    standin.moto_kms(
        "CreateAlias",
        &serde_json::json!({"AliasName": alias, "TargetKeyId": key_id}),
    );
    alias
}

/// The real cosign with the registry's login (a throwaway client config) and the
/// stand-in's AWS settings, so `awskms://` reaches its KMS; whether it succeeded, and
/// its output.
fn cosign(standin: &Standin, args: &[&str]) -> (bool, String) {
    use base64::Engine as _;
    let config = tempfile::tempdir().unwrap();
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("AWS:{}", standin.password));
    std::fs::write(
        config.path().join("config.json"),
        serde_json::json!({"auths": {standin.registry.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let out = Command::new("cosign")
        .args(args)
        .env("DOCKER_CONFIG", config.path())
        .env("SSL_CERT_FILE", &standin.ca_cert)
        .envs(
            standin
                .env
                .iter()
                .filter(|(k, _)| k.starts_with("AWS_"))
                .map(|(k, v)| (k, v)),
        )
        .output()
        .expect("run cosign (scripts/setup installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `cosign verify` and `cosign verify-attestation --type slsaprovenance1` of `reference`
/// with `key`: both must pass.
fn assert_cosign_verifies(standin: &Standin, key: &str, reference: &str, attested: bool) {
    let (ok, log) = cosign(
        standin,
        &[
            "verify",
            "--key",
            key,
            "--insecure-ignore-tlog=true",
            reference,
        ],
    );
    assert!(ok, "cosign verify {reference}:\n{log}");
    if attested {
        let (ok, log) = cosign(
            standin,
            &[
                "verify-attestation",
                "--key",
                key,
                "--insecure-ignore-tlog=true",
                "--type",
                "slsaprovenance1",
                reference,
            ],
        );
        assert!(ok, "cosign verify-attestation {reference}:\n{log}");
    }
}

fn signed_run(standin: &Standin, repo: &str, key: &str) -> RunResult {
    let ws = workspace();
    standin
        .action(ws.path())
        .input("repository", repo)
        .input("sign", "kms")
        .input("signing-key", &format!("awskms:///{key}"))
        .run()
}

/// `sign: kms`: the real cosign verifies the image's signature and its SLSA provenance
/// with the KMS key; another key does not verify it; the tag stays one image manifest;
/// both are referrers of the image (oras lists them), and the outputs name them.
#[test]
fn kms_signatures_and_provenance_verify_with_cosign() {
    let standin = standin();
    let key = create_key(standin);
    let repo = unique("signing/kms");
    let run = signed_run(standin, &repo, &key);
    run.assert_success();
    let digest = run.output("image-digest");
    let reference = format!("{}/{repo}@{digest}", standin.registry);
    assert_cosign_verifies(standin, &format!("awskms:///{key}"), &reference, true);

    let other = create_key(standin);
    let (ok, log) = cosign(
        standin,
        &[
            "verify",
            "--key",
            &format!("awskms:///{other}"),
            "--insecure-ignore-tlog=true",
            &reference,
        ],
    );
    assert!(!ok, "another key verified the signature:\n{log}");

    standin.assert_single_image_manifest(&repo, "latest");
    let signature = run.output("signature-digest");
    let provenance = run.output("provenance-digest");
    assert!(signature.starts_with("sha256:") && provenance.starts_with("sha256:"));
    let discovered = standin.oras(&["discover", "--format", "json", &reference]);
    assert!(
        discovered.contains(signature) && discovered.contains(provenance),
        "{discovered}"
    );
    assert!(
        run.summary.contains("cosign verify --key awskms:///"),
        "{}",
        run.summary
    );
}

/// In an `IMMUTABLE` repository, a re-run that built the same image (a reproducible
/// build, `on-tag-exists: overwrite`) cannot move cosign's tags: the signature and signed
/// provenance there are kept, the run succeeds, and cosign still verifies the image.
#[test]
fn a_rerun_in_an_immutable_repository_keeps_the_signatures_there() {
    let standin = standin();
    let key = create_key(standin);
    let repo = unique("signing/immutable");
    let ws = Workspace::new();
    // No layer of its own: SOURCE_DATE_EPOCH fixes the config, so both runs build the
    // same digest.
    ws.write(
        "Dockerfile",
        &format!("FROM local/busybox:latest\nLABEL marker={repo}\n"),
    );
    let run = || {
        standin
            .action(ws.path())
            .input("repository", &repo)
            .input("image-tag-mutability", "IMMUTABLE")
            .input("on-tag-exists", "overwrite")
            .input("sign", "kms")
            .input("signing-key", &format!("awskms:///{key}"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .run()
    };
    let first = run();
    first.assert_success();
    let again = run();
    again.assert_success();
    assert_eq!(again.output("image-digest"), first.output("image-digest"));
    assert_eq!(
        again.output("signature-digest"),
        first.output("signature-digest")
    );
    assert!(
        again.stderr.contains("is immutable here"),
        "{}",
        again.stderr
    );
    let reference = format!(
        "{}/{repo}@{}",
        standin.registry,
        again.output("image-digest")
    );
    assert_cosign_verifies(standin, &format!("awskms:///{key}"), &reference, true);
}

/// `sign: kms` with two platforms: the index verifies (its signature under cosign's tag,
/// no `subject`: ECR refuses referrers of an index), and each platform verifies with
/// its own signed provenance.
#[test]
fn a_signed_index_and_each_platform_verify() {
    let standin = standin();
    let key = create_key(standin);
    let repo = unique("signing/index");
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        &format!(
            "FROM {}/standin/busybox-multi:latest\nRUN uname -m > /machine\n",
            standin.registry
        ),
    );
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("sign", "kms")
        .input("signing-key", &format!("awskms:///{key}"))
        .input("platforms", "linux/amd64,linux/arm64")
        .run();
    run.assert_success();
    let key = format!("awskms:///{key}");
    let index = format!("{}/{repo}@{}", standin.registry, run.output("image-digest"));
    assert_cosign_verifies(standin, &key, &index, false);
    let platforms: std::collections::BTreeMap<String, String> =
        serde_json::from_str(run.output("platform-digests")).unwrap();
    assert_eq!(platforms.len(), 2);
    for digest in platforms.values() {
        let child = format!("{}/{repo}@{digest}", standin.registry);
        assert_cosign_verifies(standin, &key, &child, true);
    }
}

/// A key denied `kms:Sign` fails the run before the build, naming the key and the IAM
/// action; nothing is built or pushed.
#[test]
fn a_denied_kms_key_fails_before_the_build() {
    let standin = standin();
    let key = create_key(standin);
    standin.control(
        "/kms",
        Some(&serde_json::json!({"key": key, "deny": ["Sign"]})),
    );
    let repo = unique("signing/denied");
    let run = signed_run(standin, &repo, &key);
    run.assert_one_error(&[&key, "kms:Sign"]);
    assert!(!run.stderr.contains("::group::Build"), "{}", run.stderr);
    assert!(
        standin.repository(&repo).is_none(),
        "the repository was created"
    );
}

/// With `sign: kms`, a registry that refuses the signature (a referrer) fails the step:
/// a signature was asked for, unlike a provenance alone.
#[test]
fn a_refused_signature_fails_a_signed_run() {
    let standin = standin();
    let key = create_key(standin);
    let repo = unique("signing/refused");
    standin.create_repository(&repo, "MUTABLE");
    standin.control(
        "/referrers",
        Some(&serde_json::json!({"repository": repo, "refuse": true})),
    );
    let run = signed_run(standin, &repo, &key);
    run.assert_one_error(&["attaching the signed provenance", "405"]);
}

/// A managed-signing rule for `repo` under `access_key`'s registry view.
fn signing_rule(standin: &Standin, access_key: &str, filter: &str) -> String {
    let profile = format!(
        "arn:aws:signer:us-east-1:123456789012:/signing-profiles/{}",
        unique("profile").replace('-', "_")
    );
    let answer = standin.api(
        access_key,
        "PutSigningConfiguration",
        &serde_json::json!({"signingConfiguration": {"rules": [{
            "signingProfileArn": profile,
            "repositoryFilters": [{"filter": filter, "filterType": "WILDCARD_MATCH"}]
        }]}}),
    );
    assert!(answer.get("__type").is_none(), "{answer}");
    profile
}

fn ecr_signed_run(standin: &Standin, repo: &str, access_key: &str, timeout: &str) -> RunResult {
    let ws = workspace();
    standin
        .action(ws.path())
        .input("repository", repo)
        .input("sign", "ecr")
        .input("signing-timeout", timeout)
        .env("AWS_ACCESS_KEY_ID", access_key)
        .run()
}

/// `sign: ecr`: once ECR says `COMPLETE`, the run succeeds; the summary lists the
/// profile that signed, and `signature-digest` names the Notary signature ECR attached.
#[test]
fn ecr_managed_signing_is_waited_for() {
    let standin = standin();
    let access_key = own_access_key();
    let repo = unique("signing/ecr-ok");
    let profile = signing_rule(standin, &access_key, "signing/ecr-*");
    standin.control(
        "/signing",
        Some(&serde_json::json!({"repository": repo, "status": "COMPLETE", "seconds": 2})),
    );
    let ws = workspace();
    let run = standin
        .action(ws.path())
        .input("repository", &repo)
        .input("sign", "ecr")
        .env("AWS_ACCESS_KEY_ID", &access_key)
        .run();
    run.assert_success();
    assert!(run.summary.contains(&profile), "{}", run.summary);
    let referrers = standin.referrers(&repo, run.output("image-digest"));
    let signature = run.output("signature-digest");
    assert!(
        signature.starts_with("sha256:"),
        "{signature:?} {referrers:?}\n{}\n{}",
        run.output_file,
        run.summary
    );
    assert!(
        referrers
            .iter()
            .any(|(d, t)| d == signature && t == "application/vnd.cncf.notary.signature"),
        "{referrers:?}"
    );
}

/// `sign: ecr`: a `FAILED` signing job fails the step with the profile, the failure code
/// and reason; one that never finishes fails after `signing-timeout`, naming the profile.
#[test]
fn ecr_managed_signing_failures_name_the_profile() {
    let standin = standin();
    let access_key = own_access_key();
    let profile = signing_rule(standin, &access_key, "signing/ecr-*");

    let repo = unique("signing/ecr-failed");
    standin.control(
        "/signing",
        Some(
            &serde_json::json!({"repository": repo, "status": "FAILED", "seconds": 1,
            "failure_code": "SIGNING_FAILED", "failure_reason": "the profile is revoked"}),
        ),
    );
    let failed = ecr_signed_run(standin, &repo, &access_key, "1m");
    failed.assert_one_error(&[&profile, "SIGNING_FAILED", "the profile is revoked"]);

    let repo = unique("signing/ecr-slow");
    standin.control(
        "/signing",
        Some(&serde_json::json!({"repository": repo, "status": "IN_PROGRESS"})),
    );
    let slow = ecr_signed_run(standin, &repo, &access_key, "4s");
    slow.assert_one_error(&[&profile, "signing-timeout"]);
}

/// `sign: ecr` on a repository no signing rule covers fails before the build, saying
/// how to configure managed signing.
#[test]
fn ecr_signing_without_a_rule_fails_before_the_build() {
    let standin = standin();
    let access_key = own_access_key();
    signing_rule(standin, &access_key, "some-other/*");
    let repo = unique("signing/ecr-uncovered");
    let run = ecr_signed_run(standin, &repo, &access_key, "1m");
    run.assert_one_error(&[&repo]);
    assert!(!run.stderr.contains("::group::Build"), "{}", run.stderr);
}
