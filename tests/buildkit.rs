//! BuildKit builds against the real Docker daemon (`DOCKER_HOST`, default the local
//! socket), through `engine::buildkit`: modern Dockerfile syntax, build secrets that
//! never reach the image or the log, readable progress, and a failing step reported with
//! its Dockerfile line. Only `local/busybox:latest` and `scratch` are used as bases:
//! nothing is pulled. Each test tags its images uniquely and removes only those.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use ecr_build_push::engine::buildkit::{
    self, BuildkitBuild, BuildkitError, BuildkitOutcome, DaemonAddress, SyncedDir, SyncedDirs,
};
use ecr_build_push::engine::context;

fn docker_host() -> DaemonAddress {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
    DaemonAddress::parse(&host).expect("a unix:// or tcp:// DOCKER_HOST")
}

/// A unique local image reference for this test process.
fn unique_tag(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("local/bk-test-{what}:{}-{n}-{nanos:x}", std::process::id())
}

/// Removes the test's images when dropped (not the cache: other builds share it).
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("docker")
                .arg("rmi")
                .arg("-f")
                .args(&self.0)
                .output();
        }
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker_bytes(args: &[&str]) -> Vec<u8> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[derive(Default)]
struct Options<'a> {
    target: Option<&'a str>,
    no_cache: bool,
    secrets: Vec<(String, Vec<u8>)>,
    build_args: BTreeMap<String, String>,
}

struct Run {
    result: Result<BuildkitOutcome, BuildkitError>,
    lines: Vec<String>,
    seconds: f64,
}

fn build(dir: &Path, tag: &str, options: &Options<'_>) -> Run {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dockerfile = dir.join("Dockerfile");
        let text = std::fs::read_to_string(&dockerfile).unwrap();
        let prepared = context::prepare(dir, &dockerfile).expect("prepare the context");
        let dockerfile_name = prepared.dockerfile_name().to_string();
        let dirs = SyncedDirs {
            context: SyncedDir::context(prepared.context_dir(), prepared.matcher()),
            dockerfile: SyncedDir::dockerfile(prepared.dockerfile_path()),
        };
        let tags = vec![tag.to_string()];
        let labels = BTreeMap::from([("org.example.test".to_string(), "buildkit".to_string())]);
        let request = BuildkitBuild {
            dockerfile: &dockerfile_name,
            dockerfile_text: Some(&text),
            tags: &tags,
            build_args: &options.build_args,
            labels: &labels,
            target: options.target,
            platform: None,
            pull: false,
            no_cache: options.no_cache,
            cache_from: &[],
            registry_auth: None,
            secrets: &options.secrets,
            exporter_compression: None,
        };
        let mut lines = Vec::new();
        let started = Instant::now();
        let stall = ecr_build_push::network::stall::StallTimeout::DEFAULT;
        let result = buildkit::build(&docker_host(), &request, dirs, stall, |line| {
            lines.push(line.to_string());
        })
        .await;
        let seconds = started.elapsed().as_secs_f64();
        Run {
            result,
            lines,
            seconds,
        }
    })
}

fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// A random value that cannot occur by chance in an image or a log.
fn random_value(what: &str) -> String {
    format!("{what}-{}-value", ecr_build_push::random::token())
}

#[test]
fn the_local_daemon_supports_buildkit() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(runtime.block_on(buildkit::supports_buildkit(&docker_host())));
    let missing = DaemonAddress::parse("unix:///nonexistent.sock").unwrap();
    assert!(!runtime.block_on(buildkit::supports_buildkit(&missing)));
}

const MODERN: &str = r#"FROM local/busybox:latest AS base
RUN --mount=type=cache,target=/cache \
    echo "cache run $(date +%s%N)" >> /cache/runs && wc -l < /cache/runs > /cache-runs
COPY <<EOF /greeting
hello from a heredoc
EOF
RUN <<EOT
set -e
echo "heredoc script ran" > /script-ran
cat /greeting
EOT

FROM base AS final
COPY app.txt /app.txt
RUN echo "final stage" > /final

FROM base AS unused
RUN exit 7
"#;

/// Cache mounts, heredocs (`COPY <<EOF`, `RUN <<EOT`) and a multi-stage build with a
/// target, with no `# syntax=` line; the progress is readable, and a rebuild is cached.
#[test]
fn modern_dockerfile_builds_and_rebuilds_from_cache() {
    let dir = workspace(&[("Dockerfile", MODERN), ("app.txt", "app\n")]);
    let tag = unique_tag("modern");
    let _images = Images(vec![tag.clone()]);
    // A fresh build arg keeps this run's steps uncached on a daemon that saw them before.
    let nonce = random_value("nonce");
    let options = Options {
        target: Some("final"),
        build_args: BTreeMap::from([("NONCE".to_string(), nonce)]),
        ..Options::default()
    };
    // `--no-cache` for the first build, so the timings and output do not depend on
    // what earlier runs left in the daemon's cache.
    let first = build(
        dir.path(),
        &tag,
        &Options {
            no_cache: true,
            target: options.target,
            build_args: options.build_args.clone(),
            ..Options::default()
        },
    );
    let log = first.lines.join("\n");
    let outcome = first.result.unwrap_or_else(|e| panic!("{e:?}\n{log}"));
    eprintln!("cold build: {:.2}s\n{log}", first.seconds);
    assert!(outcome.image_id.starts_with("sha256:"), "{outcome:?}");
    // A FROM step shared by stages may be named without its stage, and after either
    // stage (BuildKit picks one of the two vertices): `[1/4] FROM` or `[1/2] FROM`.
    assert!(
        log.contains("1/4] FROM docker.io/local/busybox:latest")
            || log.contains("1/2] FROM docker.io/local/busybox:latest"),
        "{log}"
    );
    assert!(log.contains("[base 2/4] RUN --mount=type=cache"), "{log}");
    assert!(log.contains("[base 3/4] COPY <<EOF /greeting"), "{log}");
    assert!(log.contains("[final 1/2] COPY app.txt /app.txt"), "{log}");
    assert!(log.contains(" DONE "), "{log}");
    assert!(
        log.contains("hello from a heredoc"),
        "RUN output is shown: {log}"
    );
    assert!(
        !log.contains("exit 7"),
        "the unused stage is not built: {log}"
    );
    assert_eq!(outcome.steps, 6, "{outcome:?}\n{log}");

    let shown = docker(&[
        "run",
        "--rm",
        &tag,
        "cat",
        "/greeting",
        "/script-ran",
        "/final",
        "/app.txt",
        "/cache-runs",
    ]);
    assert!(
        shown.starts_with("hello from a heredoc\nheredoc script ran\nfinal stage\napp\n"),
        "{shown}"
    );
    let inspect = docker(&["inspect", "--format", "{{json .Config.Labels}}", &tag]);
    assert!(
        inspect.contains("\"org.example.test\":\"buildkit\""),
        "{inspect}"
    );

    let second = build(dir.path(), &tag, &options);
    let log2 = second.lines.join("\n");
    let again = second.result.unwrap_or_else(|e| panic!("{e:?}\n{log2}"));
    eprintln!("cached rebuild: {:.2}s\n{log2}", second.seconds);
    assert!(log2.contains("CACHED"), "{log2}");
    // (The image ID differs: BuildKit stamps the config with the build time.)
    assert_eq!(again.steps, outcome.steps, "{log2}");
    // Every step but the FROM of a local image (which BuildKit shows as DONE) is cached.
    assert!(again.cached_steps >= again.steps - 1, "{again:?}\n{log2}");
}

/// A secret from a file and one from an environment variable reach `RUN`, and neither is
/// in any layer, the image config, the history or the rendered output.
#[test]
fn secrets_reach_run_and_nothing_else() {
    let file_value = random_value("file-secret");
    let env_value = random_value("env-secret");

    let dockerfile = r"FROM local/busybox:latest
RUN --mount=type=secret,id=from_file \
    --mount=type=secret,id=from_env \
    sha256sum /run/secrets/from_file | cut -d' ' -f1 > /file.sha \
 && sha256sum /run/secrets/from_env | cut -d' ' -f1 > /env.sha \
 && wc -c < /run/secrets/from_file
RUN ls -la /run/secrets 2>&1 || true
";
    let dir = workspace(&[("Dockerfile", dockerfile)]);
    // The caller reads `src=` files and `env=` variables; this is what it hands over.
    let secret_file = dir.path().join("secret.txt");
    std::fs::write(&secret_file, &file_value).unwrap();
    let secrets = vec![
        (
            "from_file".to_string(),
            std::fs::read(&secret_file).unwrap(),
        ),
        ("from_env".to_string(), env_value.clone().into_bytes()),
    ];
    std::fs::remove_file(&secret_file).unwrap(); // not in the context either

    let tag = unique_tag("secrets");
    let _images = Images(vec![tag.clone()]);
    let run = build(
        dir.path(),
        &tag,
        &Options {
            no_cache: true,
            secrets,
            ..Options::default()
        },
    );
    let log = run.lines.join("\n");
    let outcome = run.result.unwrap_or_else(|e| panic!("{e:?}\n{log}"));
    eprintln!("secrets build: {:.2}s\n{log}", run.seconds);

    // The secrets reached the RUN.
    let sha = |s: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg("printf %s \"$V\" | sha256sum | cut -d' ' -f1")
            .env("V", s)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let shown = docker(&["run", "--rm", &tag, "cat", "/file.sha", "/env.sha"]);
    assert_eq!(
        shown.lines().collect::<Vec<_>>(),
        [sha(&file_value), sha(&env_value)],
        "the RUN saw both secrets"
    );

    // Nowhere in the image, its config, its history or the output. `docker save` holds
    // the layers uncompressed: the hash written by the RUN is found there, as a control.
    let saved = docker_bytes(&["save", &tag]);
    assert!(
        contains(&saved, sha(&file_value).as_bytes()),
        "control: layer content is searchable"
    );
    let inspect = docker(&["inspect", &tag]);
    let history = docker(&["history", "--no-trunc", &tag]);
    for value in [&file_value, &env_value] {
        assert!(
            !contains(&saved, value.as_bytes()),
            "a secret is in the saved image"
        );
        assert!(
            !inspect.contains(value.as_str()),
            "a secret is in the image config"
        );
        assert!(
            !history.contains(value.as_str()),
            "a secret is in the history"
        );
        assert!(!log.contains(value.as_str()), "a secret is in the output");
    }
    assert!(!saved.is_empty() && outcome.image_id.starts_with("sha256:"));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A secret the Dockerfile requires but the build was not given fails the build, naming it.
#[test]
fn a_missing_required_secret_fails_the_build() {
    let dockerfile = "FROM local/busybox:latest\nRUN --mount=type=secret,id=absent,required=true cat /run/secrets/absent\n";
    let dir = workspace(&[("Dockerfile", dockerfile)]);
    let tag = unique_tag("nosecret");
    let _images = Images(vec![tag.clone()]);
    let run = build(dir.path(), &tag, &Options::default());
    let log = run.lines.join("\n");
    match run.result {
        Err(BuildkitError::Failed { message, line, .. }) => {
            assert!(message.contains("absent"), "{message}\n{log}");
            assert_eq!(line, Some(2), "{message}\n{log}");
        }
        other => panic!("expected a failed build, got {other:?}\n{log}"),
    }
}

/// A failing RUN comes back typed, with BuildKit's message and the Dockerfile line.
#[test]
fn a_failing_run_reports_its_dockerfile_line() {
    let dockerfile = "\
# comment line
FROM local/busybox:latest AS build
RUN echo before

RUN echo \"about to fail\" \\
 && exit 3
RUN echo never
";
    let dir = workspace(&[("Dockerfile", dockerfile)]);
    let tag = unique_tag("fail");
    let _images = Images(vec![tag.clone()]);
    let run = build(
        dir.path(),
        &tag,
        &Options {
            no_cache: true,
            ..Options::default()
        },
    );
    let log = run.lines.join("\n");
    eprintln!("{log}");
    match run.result {
        Err(BuildkitError::Failed {
            message,
            step,
            line,
        }) => {
            assert!(message.contains("exit code: 3"), "{message}");
            assert_eq!(line, Some(5), "{message}\n{log}");
            let step = step.unwrap_or_default();
            // A single-stage file's steps carry no stage name, even when it has one.
            assert!(step.starts_with("[3/4] RUN echo"), "{step}");
        }
        other => panic!("expected a failed step, got {other:?}\n{log}"),
    }
    assert!(log.contains("about to fail"), "{log}");
    assert!(log.contains("ERROR: process"), "{log}");
    assert!(!log.contains("never\n"), "{log}");
}

/// A Dockerfile that does not parse fails with the line BuildKit names.
#[test]
fn a_dockerfile_error_reports_its_line() {
    let dir = workspace(&[(
        "Dockerfile",
        "FROM local/busybox:latest\n\nNOTANINSTRUCTION x\n",
    )]);
    let tag = unique_tag("parse");
    let run = build(dir.path(), &tag, &Options::default());
    match run.result {
        Err(BuildkitError::Failed { message, line, .. }) => {
            assert_eq!(line, Some(3), "{message}");
        }
        other => panic!("expected a Dockerfile error, got {other:?}"),
    }
}
