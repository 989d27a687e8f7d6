use super::*;

fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn parse(pairs: &[(&str, &str)]) -> Result<Inputs, InputError> {
    Inputs::parse(&ActionSpec::embedded(), &values(pairs), Path::new("/ws"))
}

/// A valid, non-default value for every input in action.yml. The test below fails when an
/// input is added to action.yml without a sample here, so new inputs get covered.
fn sample(name: &str) -> &'static str {
    match name {
        "repository" => "team/app",
        "tags" => "v1, v2",
        "context" => "sub",
        "dockerfile" => "other/Dockerfile",
        "build-args" => "A=1",
        "labels" => "org.opencontainers.image.source=x",
        "target" => "runtime",
        "platform" => "linux/arm64",
        "platforms" => "linux/amd64,linux/arm64",
        "platform-hosts" => "linux/arm64=tcp://arm-builder:2376",
        "pull" | "no-cache" => "true",
        "push" | "create-repository" | "scan-on-push" | "default-labels" => "false",
        "image-tag-mutability" => "IMMUTABLE_WITH_EXCLUSION",
        "image-tag-mutability-exclusions" => "latest, dev-*",
        "encryption-type" => "KMS",
        "kms-key" => "alias/ecr",
        "repository-tags" => "team=platform",
        "lifecycle-policy" => r#"{"rules":[{"rulePriority":1}]}"#,
        "repository-policy" => "Version: '2012-10-17'\nStatement: []",
        "registry-id" => "210987654321",
        "on-tag-exists" => "skip",
        "builder" => "buildkit",
        "push-engine" => "direct",
        "compression" => "zstd",
        "compression-level" => "5",
        "secrets" => "id=token,env=TOKEN",
        "cache-from" => "registry.example/app:main",
        "aws-region" => "eu-west-1",
        "registry-endpoint" => "vpce-0abc-xyz.dkr.ecr.us-east-1.vpce.amazonaws.com",
        "scan" => "wait",
        "scan-fail-on" => "HIGH",
        "scan-ignore" => "CVE-2024-0001",
        "scan-timeout" => "90s",
        "provenance" => "max",
        "sign" => "kms",
        "signing-key" => "awskms:///alias/release",
        "signing-timeout" => "2m",
        "replication-timeout" => "45m",
        "public-description" => "An app, in short",
        "public-about" => "# About\n\nIt runs.",
        "public-usage" => "`docker run public.ecr.aws/standin/app`",
        other => panic!("no sample value for input `{other}`: add one to this test"),
    }
}

/// The parser reads exactly the inputs action.yml declares (no more, no fewer), and each
/// one changes the parsed result when set, so none is silently ignored.
#[test]
fn every_input_in_action_yml_is_parsed_and_no_other() {
    let spec = ActionSpec::embedded();
    // `platform` is the deprecated alias of `platforms`, and giving both is an error: it
    // has a test of its own (`deprecated_platform_is_an_alias_of_platforms`).
    // `build-platforms` needs `push: true`, which the samples turn off: it is read here
    // (unset) and has its test (`build_platforms_make_a_leg_of_a_shared_build`).
    // `sign` and `signing-key` need `push: true` too; their test is
    // `supply_chain_inputs_default_to_provenance_and_refuse_a_half_signing_setup`.
    // `also-push-to` too: `also_push_to_needs_a_push_by_the_direct_pusher_of_one_build`.
    let needs_push = |name: &str| {
        matches!(
            name,
            "build-platforms" | "sign" | "signing-key" | "also-push-to"
        )
    };
    let all: BTreeMap<String, String> = spec
        .inputs
        .iter()
        .filter(|i| i.name != "platform" && !needs_push(&i.name))
        .map(|i| (i.name.clone(), sample(&i.name).to_string()))
        .collect();
    let (parsed, mut read) =
        Inputs::parse_tracked(&spec, &all, Path::new("/ws"), &Context::default());
    assert!(read.contains("platform"), "the alias is looked at");
    read.insert("platform".into());
    let full = parsed.expect("all samples are valid");
    let declared: std::collections::BTreeSet<String> =
        spec.inputs.iter().map(|i| i.name.clone()).collect();
    assert_eq!(read, declared);

    // Dropping one input at a time (back to its default) must change the result.
    for input in &spec.inputs {
        if input.required || input.name == "platform" || needs_push(&input.name) {
            continue;
        }
        let mut without = all.clone();
        without.remove(&input.name);
        // kms-key is only valid with KMS, which is not the default: drop both together.
        if input.name == "encryption-type" {
            without.remove("kms-key");
        }
        // platform-hosts names one of `platforms`: drop both together.
        if input.name == "platforms" {
            without.remove("platform-hosts");
        }

        // Exclusion filters go with a `*_WITH_EXCLUSION` setting, which needs them: drop
        // both together, either way.
        if input.name.starts_with("image-tag-mutability") {
            without.remove("image-tag-mutability");
            without.remove("image-tag-mutability-exclusions");
        }
        let parsed = Inputs::parse(&spec, &without, Path::new("/ws"))
            .unwrap_or_else(|e| panic!("without {}: {e}", input.name));
        assert_ne!(parsed, full, "input `{}` has no effect", input.name);
    }
}

/// Defaults come from action.yml: tag `latest`, context `.`, push and create on, MUTABLE,
/// scan on push, AES256.
#[test]
fn defaults_come_from_action_yml() {
    let inputs = parse(&[("repository", "app")]).unwrap();
    assert_eq!(inputs.tags, ["latest"]);
    assert_eq!(inputs.build.context, Path::new("/ws/."));
    assert_eq!(
        inputs.build.dockerfile_path(),
        Path::new("/ws/./Dockerfile")
    );
    assert!(inputs.push);
    assert!(inputs.repository_settings.create);
    assert!(inputs.repository_settings.scan_on_push);
    assert_eq!(
        inputs.repository_settings.tag_mutability,
        TagMutability::Mutable
    );
    assert_eq!(inputs.repository_settings.encryption, Encryption::Aes256);
    assert_eq!(inputs.registry_id, None);
    assert_eq!(inputs.aws_region, None);
}

/// Tags split on commas and newlines, trimmed, de-duplicated in order.
#[test]
fn tags_split_on_commas_and_newlines() {
    let inputs = parse(&[("repository", "app"), ("tags", "v1, sha-1\nlatest,v1\n")]).unwrap();
    assert_eq!(inputs.tags, ["v1", "sha-1", "latest"]);
}

/// Policies arrive as inline JSON, inline YAML or a file, and normalise to the same JSON.
#[test]
fn policies_from_json_yaml_or_file_are_equal() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.yml"),
        "rules:\n  - rulePriority: 1\n",
    )
    .unwrap();
    let spec = ActionSpec::embedded();
    let parse_with = |policy: &str| {
        Inputs::parse(
            &spec,
            &values(&[("repository", "app"), ("lifecycle-policy", policy)]),
            dir.path(),
        )
        .unwrap()
        .repository_settings
        .lifecycle_policy
        .unwrap()
        .json
    };
    let json = parse_with(r#"{"rules": [{"rulePriority": 1}]}"#);
    assert_eq!(json, parse_with("rules:\n  - rulePriority: 1"));
    assert_eq!(json, parse_with("policy.yml"));
}

/// Every kind of bad value fails with an error that names the input.
#[test]
fn bad_values_name_their_input() {
    let cases: &[(&str, &str)] = &[
        ("repository", "MyApp"),
        ("repository", "team/../app"),
        ("repository", "/app"),
        ("tags", "a:b"),
        ("tags", ".hidden"),
        ("tags", " , \n"),
        ("build-args", "NOEQUALS"),
        ("labels", "a=b\nnope"),
        ("platform", "linux/amd64,linux/x86_64"),
        ("platforms", "linux/arm64,linux/arm64/v8"),
        ("platforms", "linux/x99"),
        ("platforms", "linux"),
        ("platform-hosts", "linux/arm64=tcp://arm:2376"),
        ("pull", "yes"),
        ("no-cache", "1"),
        ("push", "maybe"),
        ("create-repository", "nope"),
        ("image-tag-mutability", "maybe"),
        ("image-tag-mutability", "IMMUTABLE_WITH_EXCLUSION"),
        ("image-tag-mutability-exclusions", "latest"),
        ("image-tag-mutability-exclusions", "a,b,c,d,e,f"),
        ("scan-on-push", "on"),
        ("encryption-type", "DES"),
        ("kms-key", "alias/x"),
        ("repository-tags", "team"),
        ("lifecycle-policy", "{not json"),
        ("lifecycle-policy", "missing-file.json"),
        ("lifecycle-policy", r#"{"rules": []}"#),
        ("repository-policy", "[1, 2]"),
        ("registry-id", "12345"),
        ("aws-region", "moon-base"),
        ("target", "two words"),
        ("on-tag-exists", "replace"),
        ("builder", "kaniko"),
        ("push-engine", "fast"),
        ("compression", "brotli"),
        ("compression-level", "fast"),
        ("compression-level", "10"),
        ("compression-level", "0"),
        ("secrets", "id=x"),
        ("secrets", "id=x,src=missing.txt"),
        ("secrets", "src=a.txt"),
        ("secrets", "id=a,env=A\nid=a,env=B"),
        ("cache-from", "two words"),
    ];
    for (input, value) in cases {
        let mut pairs = vec![("repository", "app"), (*input, *value)];
        if *input == "repository" {
            pairs.remove(0);
        }
        let err = parse(&pairs).expect_err(&format!("{input}={value:?} should fail"));
        assert_eq!(err.input(), *input, "{input}={value:?}: {err}");
        assert!(err.to_string().contains(&format!("`{input}`")), "{err}");
    }
}

/// A missing repository and an unknown input are reported as such.
#[test]
fn missing_repository_and_unknown_inputs_are_reported() {
    let err = parse(&[]).unwrap_err();
    assert!(matches!(err, InputError::Missing { .. }), "{err}");
    assert_eq!(err.input(), "repository");
    let err = parse(&[("repository", "app"), ("build-arg", "A=1")]).unwrap_err();
    assert_eq!(err, InputError::Unknown("build-arg".into()));
}

/// A 300-character value is shortened in the message, so the reason stays readable.
#[test]
fn long_values_are_shortened_in_messages() {
    let long = "a".repeat(300);
    let err = parse(&[("repository", &long)]).unwrap_err();
    assert!(err.to_string().len() < 250, "{err}");
    assert!(err.to_string().contains("300"), "{err}");
}

/// `registry-endpoint` is a host with an optional port: a URL or a path is refused with
/// what to give instead.
#[test]
fn registry_endpoint_is_a_host_and_port() {
    let spec = ActionSpec::embedded();
    for good in [
        "vpce-0abc-xyz.dkr.ecr.us-east-1.vpce.amazonaws.com",
        "10.0.1.5:8443",
    ] {
        let raw = BTreeMap::from([
            ("repository".to_string(), "app".to_string()),
            ("registry-endpoint".to_string(), good.to_string()),
        ]);
        let inputs = Inputs::parse(&spec, &raw, Path::new("/ws")).expect(good);
        assert_eq!(inputs.registry_endpoint.as_deref(), Some(good));
    }
    for bad in [
        "https://vpce-1.example",
        "vpce-1.example/v2",
        "host:port",
        "a b",
    ] {
        let raw = BTreeMap::from([
            ("repository".to_string(), "app".to_string()),
            ("registry-endpoint".to_string(), bad.to_string()),
        ]);
        let err = Inputs::parse(&spec, &raw, Path::new("/ws"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid value") && err.contains("registry-endpoint"),
            "{err}"
        );
    }
}

/// A remote context (Git or HTTP URL, as build-push-action's default is) or `-` for
/// stdin fails as the input's value, saying what to give instead, rather than later as a
/// path that does not exist; a folder named like a URL's tail is still a path.
#[test]
fn remote_and_stdin_contexts_are_refused_with_advice() {
    let spec = ActionSpec::embedded();
    for (input, bad, advice) in [
        (
            "context",
            "https://github.com/octo/app.git#main",
            "actions/checkout",
        ),
        ("context", "git@github.com:octo/app.git", "actions/checkout"),
        ("context", "-", "standard input"),
        ("dockerfile", "-", "standard input"),
        (
            "dockerfile",
            "https://example.com/Dockerfile",
            "actions/checkout",
        ),
    ] {
        let raw = BTreeMap::from([
            ("repository".to_string(), "app".to_string()),
            (input.to_string(), bad.to_string()),
        ]);
        let err = Inputs::parse(&spec, &raw, Path::new("/ws"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("invalid value `{bad}` for input `{input}`"))
                && err.contains(advice),
            "{err}"
        );
    }
    let raw = BTreeMap::from([
        ("repository".to_string(), "app".to_string()),
        ("context".to_string(), "app.git".to_string()),
    ]);
    let inputs = Inputs::parse(&spec, &raw, Path::new("/ws")).unwrap();
    assert_eq!(inputs.build.context, Path::new("/ws/app.git"));
}

/// `platform` still works, as `platforms` with a warning; both at once is an error; one
/// platform is a single-platform build, two a build set.
#[test]
fn deprecated_platform_is_an_alias_of_platforms() {
    let old = parse(&[("repository", "app"), ("platform", "linux/arm64/v8")]).unwrap();
    let new = parse(&[("repository", "app"), ("platforms", "linux/arm64")]).unwrap();
    assert_eq!(old.platforms, new.platforms);
    assert_eq!(old.build.platform.as_deref(), Some("linux/arm64"));
    assert!(old.warnings[0].contains("deprecated"), "{:?}", old.warnings);
    assert!(new.warnings.is_empty());
    let both = parse(&[
        ("repository", "app"),
        ("platform", "linux/arm64"),
        ("platforms", "linux/arm64"),
    ])
    .unwrap_err();
    assert_eq!(both.input(), "platform");
    let two = parse(&[
        ("repository", "app"),
        ("platforms", "linux/amd64\nlinux/arm64"),
    ])
    .unwrap();
    assert_eq!(two.platforms.len(), 2);
    assert_eq!(two.build.platform, None);
}

/// zstd needs an OCI manifest: refused with the daemon's pusher, which writes gzip schema
/// 2 for the classic store; levels are each compression's own.
#[test]
fn zstd_is_refused_with_the_daemons_pusher() {
    let err = parse(&[
        ("repository", "app"),
        ("compression", "zstd"),
        ("push-engine", "daemon"),
    ])
    .unwrap_err();
    assert_eq!(err.input(), "compression");
    assert!(err.to_string().contains("push-engine: auto"), "{err}");
    let zstd = parse(&[
        ("repository", "app"),
        ("compression", "ZSTD"),
        ("compression-level", "19"),
    ])
    .unwrap();
    assert_eq!(zstd.compression, Compression::Zstd { level: 19 });
    assert_eq!(
        parse(&[("repository", "app")]).unwrap().compression,
        Compression::default()
    );
}

/// A case: inputs given, the start of the error, and the reason it gives.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

/// The four tag mutability settings, in any case; exclusion filters go with the two
/// `*_WITH_EXCLUSION` ones only, which need 1 to 5 of them, each as ECR allows.
#[test]
fn tag_mutability_takes_exclusion_filters_with_exclusion_settings_only() {
    for (given, expected) in [
        ("MUTABLE", TagMutability::Mutable),
        ("immutable", TagMutability::Immutable),
    ] {
        let inputs = parse(&[("repository", "app"), ("image-tag-mutability", given)]).unwrap();
        assert_eq!(inputs.repository_settings.tag_mutability, expected);
        assert!(inputs
            .repository_settings
            .tag_mutability_exclusions
            .is_empty());
    }
    for (given, expected) in [
        (
            "MUTABLE_WITH_EXCLUSION",
            TagMutability::MutableWithExclusion,
        ),
        (
            "immutable_with_exclusion",
            TagMutability::ImmutableWithExclusion,
        ),
    ] {
        let inputs = parse(&[
            ("repository", "app"),
            ("image-tag-mutability", given),
            ("image-tag-mutability-exclusions", "latest\ndev-*, *-rc"),
        ])
        .unwrap();
        assert_eq!(inputs.repository_settings.tag_mutability, expected);
        assert_eq!(
            inputs.repository_settings.tag_mutability_exclusions,
            ["latest", "dev-*", "*-rc"]
        );
    }
    let cases: &[Case] = &[
        (
            &[("image-tag-mutability", "IMMUTABLE_WITH_EXCLUSION")],
            "invalid value `IMMUTABLE_WITH_EXCLUSION` for input `image-tag-mutability`",
            "`image-tag-mutability-exclusions`",
        ),
        (
            &[
                ("image-tag-mutability", "MUTABLE_WITH_EXCLUSION"),
                ("image-tag-mutability-exclusions", " , \n"),
            ],
            "for input `image-tag-mutability`",
            "1 to 5 wildcard filters",
        ),
        (
            &[("image-tag-mutability-exclusions", "latest")],
            "invalid value `latest` for input `image-tag-mutability-exclusions`",
            "(it is `MUTABLE`)",
        ),
        (
            &[
                ("image-tag-mutability", "IMMUTABLE"),
                ("image-tag-mutability-exclusions", "latest"),
            ],
            "for input `image-tag-mutability-exclusions`",
            "(it is `IMMUTABLE`)",
        ),
        (
            &[
                ("image-tag-mutability", "IMMUTABLE_WITH_EXCLUSION"),
                ("image-tag-mutability-exclusions", "a,b,c,d,e,f"),
            ],
            "for input `image-tag-mutability-exclusions`",
            "6 filters given; ECR allows 1 to 5",
        ),
        (
            &[
                ("image-tag-mutability", "IMMUTABLE_WITH_EXCLUSION"),
                ("image-tag-mutability-exclusions", "latest,feature/*"),
            ],
            "for input `image-tag-mutability-exclusions`",
            "filter `feature/*` has `/`",
        ),
        (
            &[("image-tag-mutability", "SOMETIMES")],
            "invalid value `SOMETIMES` for input `image-tag-mutability`",
            "`MUTABLE`, `IMMUTABLE`, `MUTABLE_WITH_EXCLUSION` or `IMMUTABLE_WITH_EXCLUSION`",
        ),
    ];
    for (pairs, start, reason) in cases {
        let mut all = vec![("repository", "app")];
        all.extend_from_slice(pairs);
        let err = parse(&all).unwrap_err().to_string();
        assert!(
            err.contains(start) && err.contains(reason),
            "{pairs:?}: {err}"
        );
    }
}

/// `build-platforms` makes the run one leg of a shared build: its share is parsed and
/// normalised; without it the run builds every platform.
#[test]
fn build_platforms_make_a_leg_of_a_shared_build() {
    let base = [
        ("repository", "app"),
        ("platforms", "linux/amd64,linux/arm64"),
    ];
    assert!(parse(&base).unwrap().build_platforms.is_empty());
    let mut with_share = base.to_vec();
    with_share.push(("build-platforms", "linux/arm64/v8"));
    let leg = parse(&with_share).unwrap();
    assert_eq!(leg.build_platforms.len(), 1);
    assert_eq!(leg.build_platforms[0].to_string(), "linux/arm64");
}

/// Provenance is on by default; `sign` and `signing-key` come together, each refused
/// without the other, naming the input and what to do.
#[test]
fn supply_chain_inputs_default_to_provenance_and_refuse_a_half_signing_setup() {
    let defaults = parse(&[("repository", "app")]).unwrap();
    assert_eq!(defaults.supply.provenance, ProvenanceMode::Min);
    assert_eq!(defaults.supply.signing, Signing::None);
    assert_eq!(defaults.supply.signing_timeout.as_secs(), 300);
    let off = parse(&[("repository", "app"), ("provenance", "false")]).unwrap();
    assert!(!off.supply.attaches());

    for (pairs, needle) in [
        (
            vec![("sign", "kms")],
            "invalid value `kms` for input `sign`: `sign: kms` needs `signing-key`",
        ),
        (
            vec![("signing-key", "awskms:///alias/k")],
            "for input `signing-key`: it is used only with `sign: kms`",
        ),
        (
            vec![("sign", "ecr"), ("signing-key", "awskms:///alias/k")],
            "for input `signing-key`: ECR's managed signing",
        ),
        (
            vec![("sign", "cosign")],
            "invalid value `cosign` for input `sign`: expected `kms`",
        ),
        (
            vec![("provenance", "full")],
            "invalid value `full` for input `provenance`",
        ),
    ] {
        let mut all = vec![("repository", "app")];
        all.extend(pairs);
        let err = parse(&all).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    let ecr = parse(&[("repository", "app"), ("sign", "ECR")]).unwrap();
    assert_eq!(ecr.supply.signing, Signing::Ecr);
    let kms = parse(&[
        ("repository", "app"),
        ("sign", "kms"),
        ("signing-key", "awskms:///alias/release"),
    ])
    .unwrap();
    assert!(matches!(kms.supply.signing, Signing::Kms { .. }));
    let bad_key = parse(&[
        ("repository", "app"),
        ("sign", "kms"),
        ("signing-key", "awskms://alias/x"),
    ]);
    assert!(
        bad_key
            .unwrap_err()
            .to_string()
            .contains("write three slashes"),
        "a forgotten slash is named"
    );
}

/// `also-push-to` is parsed into targets, and refused where it cannot work: without a
/// push, with the daemon's pusher (one registry at a time, compressing for each), and in
/// a leg of a shared build (whose records live in the primary repository).
#[test]
fn also_push_to_needs_a_push_by_the_direct_pusher_of_one_build() {
    let targets = "us-west-2\n210987654321:eu-west-1 arn:aws:iam::210987654321:role/push";
    let inputs = parse(&[("repository", "app"), ("also-push-to", targets)]).unwrap();
    assert_eq!(inputs.also_push_to.len(), 2);
    assert_eq!(
        inputs.also_push_to[1].role.as_deref(),
        Some("arn:aws:iam::210987654321:role/push")
    );
    for (extra, expected) in [
        (("push", "false"), "`push` is false"),
        (("push-engine", "daemon"), "push-engine: daemon"),
        (("build-platforms", "linux/amd64"), "build-platforms"),
    ] {
        let mut given = vec![("repository", "app"), ("also-push-to", targets), extra];
        if extra.0 == "build-platforms" {
            given.push(("platforms", "linux/amd64,linux/arm64"));
        }
        let err = parse(&given).unwrap_err();
        assert_eq!(err.input(), "also-push-to", "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
}

/// The catalog inputs land in `public_catalog` with the badges of `platforms`; `@` reads
/// a workspace file; a too long or missing one names the input and the value.
#[test]
fn public_catalog_inputs_are_parsed_with_the_platform_badges() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ABOUT.md"), "# From a file\n").unwrap();
    let values = |extra: &[(&str, &str)]| -> BTreeMap<String, String> {
        let mut map: BTreeMap<String, String> = [
            ("repository", "team/app"),
            ("platforms", "linux/amd64,linux/arm64,linux/arm/v7"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
        map.retain(|_, v| !v.is_empty());
        map
    };
    let spec = ActionSpec::embedded();
    let inputs = Inputs::parse(
        &spec,
        &values(&[
            ("public-description", "Short"),
            ("public-about", "@ABOUT.md"),
        ]),
        dir.path(),
    )
    .unwrap();
    let catalog = &inputs.public_catalog;
    assert_eq!(catalog.description.as_deref(), Some("Short"));
    assert_eq!(catalog.about.as_deref(), Some("# From a file\n"));
    assert_eq!(catalog.usage, None);
    assert_eq!(catalog.architectures, ["x86-64", "ARM 64", "ARM"]);
    assert_eq!(catalog.operating_systems, ["Linux"]);

    let long = "x".repeat(1_025);
    let err =
        Inputs::parse(&spec, &values(&[("public-description", &long)]), dir.path()).unwrap_err();
    assert_eq!(err.input(), "public-description");
    assert!(err.to_string().contains("at most 1024 characters"), "{err}");
    let err = Inputs::parse(&spec, &values(&[("public-usage", "@USAGE.md")]), dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("invalid value `@USAGE.md` for input `public-usage`"),
        "{err}"
    );
}
