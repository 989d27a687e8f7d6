//! Test support for the end-to-end tests: the stand-in (Docker engine, moto's ECR API,
//! the TLS registry at the ECR host name, started by `scripts/standin`), a runner for the
//! action binary that behaves like GitHub's runner, and probes that look at what a user
//! would see: the registry's own manifests, moto's records, the pulled image.
//!
//! A test that needs the stand-in starts it; when it cannot start, the test fails with
//! the script's output. Nothing is skipped.

#![allow(dead_code)] // each test crate uses a different part of this module

mod attached;
pub mod network;
pub mod registries;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub const ACCOUNT: &str = "123456789012";
/// The log group every build opens, whichever builder: its absence means no build began.
pub const BUILD_STARTED: &str = "::group::Build";
/// Runs every test's builds with this builder when set (`classic`, `buildkit`), so the
/// suite proves both; unset, the action's default (`auto`) decides.
pub const TEST_BUILDER: &str = "ECR_BUILD_PUSH_TEST_BUILDER";
/// Likewise for the pusher (`daemon`, `direct`).
pub const TEST_PUSH_ENGINE: &str = "ECR_BUILD_PUSH_TEST_PUSH_ENGINE";
pub const REGION: &str = "us-east-1";
/// How every registry password the stand-in issues begins: base64 of `{"payload": `, as
/// ECR's do.
pub const ISSUED_PASSWORD_PREFIX: &str = "eyJwYXlsb2FkIjog";

/// Root of the repository (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The running stand-in and how to reach it.
#[derive(Debug)]
pub struct Standin {
    /// `export` lines from `scripts/standin env`, as pairs.
    pub env: Vec<(String, String)>,
    pub registry: String,
    pub moto_url: String,
    pub ca_cert: PathBuf,
    /// Registry password, as moto's `GetAuthorizationToken` hands it out.
    pub password: String,
}

/// Starts the stand-in once per test process (the script is idempotent) and returns it.
pub fn standin() -> &'static Standin {
    static STANDIN: OnceLock<Standin> = OnceLock::new();
    STANDIN.get_or_init(|| {
        let script = repo_root().join("scripts/standin");
        let start = Command::new(&script)
            .arg("start")
            .output()
            .expect("run scripts/standin start");
        assert!(
            start.status.success(),
            "the stand-in did not start; run `scripts/setup` (as root) first.\n{}{}",
            String::from_utf8_lossy(&start.stdout),
            String::from_utf8_lossy(&start.stderr)
        );
        let env_out = Command::new(&script)
            .arg("env")
            .output()
            .expect("run scripts/standin env");
        assert!(env_out.status.success(), "scripts/standin env failed");
        let env: Vec<(String, String)> = String::from_utf8_lossy(&env_out.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches(['"', '\'']).to_string()))
            .collect();
        let get = |name: &str| {
            env.iter().find(|(k, _)| k == name).map_or_else(
                || panic!("scripts/standin env does not export {name}"),
                |(_, v)| v.clone(),
            )
        };
        let registry = get("STANDIN_REGISTRY_HOST");
        let moto_url = get("STANDIN_MOTO_URL");
        let ca_cert = PathBuf::from(get("STANDIN_CA_CERT"));
        let mut standin = Standin {
            env: env.clone(),
            registry,
            moto_url,
            ca_cert,
            password: String::new(),
        };
        let token = standin.moto("GetAuthorizationToken", &serde_json::json!({}));
        let encoded = token["authorizationData"][0]["authorizationToken"]
            .as_str()
            .expect("moto returns a token")
            .to_string();
        let decoded = base64_decode(&encoded);
        standin.password = decoded
            .split_once(':')
            .expect("user:password")
            .1
            .to_string();
        standin
    })
}

/// One ECR API call (JSON protocol) to `url` with curl, trusting `ca` when given, the
/// `SigV4` header in form only (neither moto nor the front checks signatures); the JSON
/// answer, an error's included.
fn ecr_api_call(
    url: &str,
    ca: Option<&Path>,
    access_key: &str,
    operation: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let target = format!("AmazonEC2ContainerRegistry_V20150921.{operation}");
    aws_json_call(url, ca, access_key, ("ecr", &target), body)
}

/// One call of an AWS JSON-protocol API: `service` (the `SigV4` scope) and the
/// `X-Amz-Target` header of the operation, as [`ecr_api_call`] describes.
fn aws_json_call(
    url: &str,
    ca: Option<&Path>,
    access_key: &str,
    (service, target): (&str, &str),
    body: &serde_json::Value,
) -> serde_json::Value {
    aws_json_call_in(url, ca, (access_key, REGION), (service, target), body)
}

/// [`aws_json_call`] signed (in form) for `region`.
fn aws_json_call_in(
    url: &str,
    ca: Option<&Path>,
    (access_key, region): (&str, &str),
    (service, target): (&str, &str),
    body: &serde_json::Value,
) -> serde_json::Value {
    let mut command = Command::new("curl");
    command.args(["-sS", "-X", "POST", url]);
    if let Some(ca) = ca {
        command.arg("--cacert").arg(ca);
    }
    let out = command
        .args(["-H", "Content-Type: application/x-amz-json-1.1"])
        .args(["-H", &format!("X-Amz-Target: {target}")])
        .args(["-H", &format!("Authorization: AWS4-HMAC-SHA256 Credential={access_key}/20260101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=x")])
        .args(["--data-binary", &body.to_string()])
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {target} to {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn base64_decode(text: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
    .unwrap()
}

/// The action's image, built from `Dockerfile` by `scripts/build-image` once per test
/// process.
pub fn action_image() -> &'static str {
    const IMAGE: &str = "ecr-build-push:test";
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut command = Command::new(repo_root().join("scripts/build-image"));
        // The variables cargo sets for this test process would make the nested cargo
        // think build scripts' inputs changed, and rebuild the release binary each time.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_") && name != "CARGO_HOME" && name != "CARGO_TARGET_DIR" {
                command.env_remove(name.as_ref());
            }
        }
        let out = command
            .arg(IMAGE)
            .output()
            .expect("run scripts/build-image");
        assert!(
            out.status.success(),
            "scripts/build-image failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    IMAGE
}

/// A repository name no other test (or earlier run) uses.
/// An AWS access key id of the caller's own: the front keeps its account settings
/// (`BLOB_MOUNTING`) and token lifetimes apart from every other test's.
pub fn own_access_key() -> String {
    let key = unique("AKIA").replace('-', "").to_uppercase();
    key[..key.len().min(20)].to_string()
}

pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl Standin {
    /// Calls moto's KMS API directly (`sign: kms` tests make their own keys there) and
    /// returns the JSON answer.
    pub fn moto_kms(&self, operation: &str, body: &serde_json::Value) -> serde_json::Value {
        let target = format!("TrentService.{operation}");
        aws_json_call(&self.moto_url, None, "test", ("kms", &target), body)
    }

    /// Calls moto's ECR API directly (it does not check signatures) and returns the JSON
    /// answer; a 4xx answer is returned too, with its `__type`.
    pub fn moto(&self, operation: &str, body: &serde_json::Value) -> serde_json::Value {
        ecr_api_call(&self.moto_url, None, "test", operation, body)
    }

    /// A value `scripts/standin env` exports.
    pub fn var(&self, name: &str) -> String {
        self.env.iter().find(|(k, _)| k == name).map_or_else(
            || panic!("scripts/standin env does not export {name}"),
            |(_, v)| v.clone(),
        )
    }

    /// Adds a fault rule to the front's control API (see tests/standin/README.md).
    pub fn inject_fault(&self, rule: &serde_json::Value) {
        let url = format!("{}/faults", self.var("STANDIN_FAULTS_URL"));
        let out = Command::new("curl")
            .args([
                "-sS",
                "-f",
                "-X",
                "POST",
                &url,
                "-H",
                "Content-Type: application/json",
            ])
            .args(["--data-binary", &rule.to_string()])
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "cannot add fault {rule}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Calls the front's control API (`tests/standin/README.md`): `POST path` with `body`,
    /// or `GET path` when `body` is `None`; returns its JSON answer.
    pub fn control(&self, path: &str, body: Option<&serde_json::Value>) -> serde_json::Value {
        let url = format!("{}{path}", self.var("STANDIN_FAULTS_URL"));
        let mut command = Command::new("curl");
        command.args(["-sS", "-f", &url, "-H", "Content-Type: application/json"]);
        if let Some(body) = body {
            command.args(["-X", "POST", "--data-binary", &body.to_string()]);
        }
        let out = command.output().expect("curl");
        assert!(
            out.status.success(),
            "control API {path} {body:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("control API answers JSON")
    }

    /// The front's counters for `repository` (`PATCH` requests, mounts, expired tokens).
    pub fn stats(&self, repository: &str) -> serde_json::Value {
        self.control(&format!("/stats?repository={repository}"), None)
    }

    /// Calls the ECR API through the front, as the action does, signed (in form only)
    /// with `access_key`: the front keeps account settings and token lifetimes per access
    /// key, so a test with its own key has its own account view. The front answers what
    /// moto lacks (account settings, creation templates) and passes the rest to moto.
    pub fn api(
        &self,
        access_key: &str,
        operation: &str,
        body: &serde_json::Value,
    ) -> serde_json::Value {
        let endpoint = self.var("AWS_ENDPOINT_URL_ECR");
        ecr_api_call(&endpoint, Some(&self.ca_cert), access_key, operation, body)
    }

    /// A registry password issued through the front to `access_key`.
    pub fn password_for(&self, access_key: &str) -> String {
        let answer = self.api(access_key, "GetAuthorizationToken", &serde_json::json!({}));
        let token = answer["authorizationData"][0]["authorizationToken"]
            .as_str()
            .unwrap_or_else(|| panic!("GetAuthorizationToken: {answer}"));
        base64_decode(token)
            .split_once(':')
            .expect("user:password")
            .1
            .to_string()
    }

    /// Turns ECR's `BLOB_MOUNTING` account setting on or off for `access_key`'s view.
    pub fn set_blob_mounting(&self, access_key: &str, enabled: bool) {
        let value = if enabled { "ENABLED" } else { "DISABLED" };
        let answer = self.api(
            access_key,
            "PutAccountSetting",
            &serde_json::json!({"name": "BLOB_MOUNTING", "value": value}),
        );
        assert_eq!(answer["value"], value, "PutAccountSetting: {answer}");
    }

    /// How many fault rules scoped to `repository` are still waiting for a request.
    pub fn pending_faults(&self, repository: &str) -> usize {
        let url = format!("{}/faults", self.var("STANDIN_FAULTS_URL"));
        let out = Command::new("curl")
            .args(["-sS", "-f", &url])
            .output()
            .expect("curl");
        assert!(out.status.success(), "cannot list faults");
        let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("fault list");
        listed["pending"].as_array().map_or(0, |rules| {
            rules
                .iter()
                .filter(|r| r["repository"] == repository)
                .count()
        })
    }

    /// The repository as moto knows it, or `None`.
    pub fn repository(&self, name: &str) -> Option<serde_json::Value> {
        let answer = self.moto(
            "DescribeRepositories",
            &serde_json::json!({"repositoryNames": [name]}),
        );
        answer["repositories"].get(0).cloned()
    }

    /// Creates a repository in moto directly (as an administrator would).
    pub fn create_repository(&self, name: &str, mutability: &str) {
        let answer = self.moto(
            "CreateRepository",
            &serde_json::json!({"repositoryName": name, "imageTagMutability": mutability}),
        );
        assert!(answer["repository"].is_object(), "create {name}: {answer}");
    }

    /// The digest moto records for `repository:tag`.
    pub fn moto_digest(&self, repository: &str, tag: &str) -> Option<String> {
        let answer = self.moto(
            "DescribeImages",
            &serde_json::json!({"repositoryName": repository, "imageIds": [{"imageTag": tag}]}),
        );
        answer["imageDetails"][0]["imageDigest"]
            .as_str()
            .map(ToString::to_string)
    }

    /// Asks the registry itself (through the front, over TLS, with the ECR login) for the
    /// manifest digest of `repository:reference`.
    pub fn registry_digest(&self, repository: &str, reference: &str) -> Option<String> {
        let out = self.manifest_request(repository, reference, &["-sS", "-I"]);
        let head = String::from_utf8_lossy(&out.stdout);
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/2 200") {
            return None;
        }
        head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("docker-content-digest")
                .then(|| value.trim().to_string())
        })
    }

    /// The media types of `repository:tag`: the `Content-Type` the registry serves for it
    /// (asked with every manifest and index type) and the `imageManifestMediaType` that
    /// `DescribeImages` reports.
    pub fn manifest_media_types(&self, repository: &str, tag: &str) -> (String, String) {
        let out = self.manifest_request(repository, tag, &["-sS", "-I"]);
        let head = String::from_utf8_lossy(&out.stdout);
        let served = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-type")
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no Content-Type for {repository}:{tag}: {head}"));
        let answer = self.moto(
            "DescribeImages",
            &serde_json::json!({"repositoryName": repository, "imageIds": [{"imageTag": tag}]}),
        );
        let described = answer["imageDetails"][0]["imageManifestMediaType"]
            .as_str()
            .unwrap_or_else(|| panic!("DescribeImages of {repository}:{tag}: {answer}"))
            .to_string();
        (served, described)
    }

    /// The manifest (or index) the registry serves for `repository:reference`, as JSON.
    pub fn registry_manifest(&self, repository: &str, reference: &str) -> serde_json::Value {
        let out = self.manifest_request(repository, reference, &["-fsS"]);
        assert!(
            out.status.success(),
            "GET {repository}:{reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("a JSON manifest")
    }

    /// curl with `flags` on the registry's manifest URL of `repository:reference`, through
    /// the front over TLS with the ECR login, accepting every manifest and index type.
    fn manifest_request(&self, repository: &str, reference: &str, flags: &[&str]) -> Output {
        let url = format!(
            "https://{}/v2/{repository}/manifests/{reference}",
            self.registry
        );
        Command::new("curl")
            .args(flags)
            .arg("--cacert")
            .arg(&self.ca_cert)
            .args(["-u", &format!("AWS:{}", self.password)])
            .args(["-H", "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json"])
            .arg(&url)
            .output()
            .expect("run curl")
    }

    /// Asserts that `repository:tag` is one image manifest (Docker schema 2 or OCI), never
    /// an index, both as the registry serves it and as `DescribeImages` reports it.
    pub fn assert_single_image_manifest(&self, repository: &str, tag: &str) {
        const IMAGE_MANIFESTS: [&str; 2] = [
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.oci.image.manifest.v1+json",
        ];
        let (served, described) = self.manifest_media_types(repository, tag);
        assert!(
            IMAGE_MANIFESTS.contains(&served.as_str()),
            "{repository}:{tag} is served as {served}, not an image manifest"
        );
        assert!(
            IMAGE_MANIFESTS.contains(&described.as_str()),
            "DescribeImages says {repository}:{tag} is {described}, not an image manifest"
        );
    }

    /// Runs the action binary with these inputs, like the runner does.
    pub fn action(&self, workspace: &Path) -> ActionRun {
        ActionRun {
            program: PathBuf::from(env!("CARGO_BIN_EXE_ecr-build-push")),
            workdir: workspace.to_path_buf(),
            inputs: BTreeMap::new(),
            env: self.env.clone(),
            args: Vec::new(),
            in_actions: true,
            wrapper: Vec::new(),
        }
    }

    /// `docker pull` with the registry's login (in a throwaway client config).
    pub fn docker_pull(&self, reference: &str) {
        self.docker_logged_in(&["pull", "-q", reference]);
    }

    /// `docker push` with the registry's login: the daemon's own pusher and gzip.
    pub fn docker_push(&self, reference: &str) {
        self.docker_logged_in(&["push", "-q", reference]);
    }

    fn docker_logged_in(&self, args: &[&str]) {
        let config = tempfile::tempdir().unwrap();
        let login = Command::new("docker")
            .arg("--config")
            .arg(config.path())
            .args(["login", "-u", "AWS", "--password-stdin", &self.registry])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(self.password.as_bytes())?;
                child.wait_with_output()
            })
            .expect("docker login");
        assert!(
            login.status.success(),
            "docker login: {}",
            String::from_utf8_lossy(&login.stderr)
        );
        let run = Command::new("docker")
            .arg("--config")
            .arg(config.path())
            .args(args)
            .output()
            .expect("run docker");
        assert!(
            run.status.success(),
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&run.stderr)
        );
    }
}

/// Runs `docker` with `args` and returns stdout, panicking with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = docker_output(args);
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the engine under test (`DOCKER_HOST`) has the containerd image store.
pub fn engine_is_containerd_store() -> bool {
    docker(&["info", "-f", "{{json .DriverStatus}}"]).contains("io.containerd.snapshotter.v1")
}

/// The job summary's *Push engine* for a run with the default `push-engine` on the engine
/// under test: the route `auto` takes, or the engine [`TEST_PUSH_ENGINE`] forces.
pub fn default_push_route() -> &'static str {
    match std::env::var(TEST_PUSH_ENGINE).as_deref() {
        Ok("daemon") => "daemon",
        Ok("direct") => "direct",
        _ if auto_pushes_blobs_through_the_daemon() => "daemon (blobs), direct (tags)",
        _ => "direct",
    }
}

/// Whether a run with the default `push-engine` (`auto`, unless [`TEST_PUSH_ENGINE`] sets
/// another) hands the blobs to the daemon's pusher on the engine under test
/// (`src/route.rs`): the containerd store, on API 1.46 (Docker 27) or later.
pub fn auto_pushes_blobs_through_the_daemon() -> bool {
    if std::env::var(TEST_PUSH_ENGINE).is_ok_and(|engine| engine != "auto") {
        return false;
    }
    let api = docker(&["version", "-f", "{{.Server.APIVersion}}"]);
    let (major, minor) = api
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("unexpected API version `{api}`"));
    engine_is_containerd_store() && (major, minor) >= (1, 46)
}

pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run docker")
}

/// A temporary workspace (the runner's `/github/workspace`).
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `content` at `relative`, creating folders.
    pub fn write(&self, relative: &str, content: &str) -> &Self {
        let path = self.dir.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        self
    }
}

/// One invocation of the action.
pub struct ActionRun {
    program: PathBuf,
    workdir: PathBuf,
    inputs: BTreeMap<String, String>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    in_actions: bool,
    /// A command the binary runs under (`ip netns exec NAME`), if any.
    wrapper: Vec<String>,
}

/// What a run left behind.
#[derive(Debug)]
pub struct RunResult {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// The raw `GITHUB_OUTPUT` file.
    pub output_file: String,
    /// Outputs parsed from it.
    pub outputs: BTreeMap<String, String>,
    pub summary: String,
}

impl RunResult {
    /// `::error` lines in the log.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .chain(self.stdout.lines())
            .filter(|l| l.starts_with("::error"))
            .collect()
    }

    pub fn output(&self, name: &str) -> &str {
        self.outputs
            .get(name)
            .unwrap_or_else(|| panic!("no output `{name}`; log:\n{}", self.stderr))
    }

    /// Panics unless the run failed with exactly one `::error::` line, holding every
    /// needle; returns that line.
    pub fn assert_one_error(&self, needles: &[&str]) -> &str {
        assert!(!self.success, "the run succeeded:\n{}", self.stderr);
        let errors = self.error_lines();
        assert_eq!(errors.len(), 1, "{}", self.stderr);
        for needle in needles {
            assert!(
                errors[0].contains(needle),
                "`{needle}` missing in {}",
                errors[0]
            );
        }
        errors[0]
    }

    /// Panics with the log unless the run succeeded.
    pub fn assert_success(&self) -> &Self {
        assert!(self.success, "the action failed:\n{}", self.stderr);
        self
    }
}

impl ActionRun {
    pub fn input(mut self, name: &str, value: &str) -> Self {
        self.inputs.insert(name.to_string(), value.to_string());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn remove_env(mut self, name: &str) -> Self {
        self.env.retain(|(k, _)| k != name);
        self
    }

    /// Runs the binary under `wrapper` (e.g. `ip netns exec NAME`).
    pub fn wrapped(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(ToString::to_string).collect();
        self
    }

    /// Runs as by hand: `--flags`, no runner variables.
    pub fn by_hand(mut self, args: &[&str]) -> Self {
        self.in_actions = false;
        self.args = args.iter().map(ToString::to_string).collect();
        self
    }

    pub fn run(self) -> RunResult {
        let files = tempfile::tempdir().unwrap();
        let output_path = files.path().join("output");
        let summary_path = files.path().join("summary");
        let mut command = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(&self.program);
                command
            }
            None => Command::new(&self.program),
        };
        command
            .current_dir(&self.workdir)
            .args(&self.args)
            .env_clear();
        // Only what a runner would pass: PATH and HOME, the stand-in's AWS settings, and
        // the engine the tests run on (DOCKER_HOST), as a job would set it.
        for name in ["PATH", "HOME", "DOCKER_HOST"] {
            if let Ok(value) = std::env::var(name) {
                command.env(name, value);
            }
        }
        command.env("AWS_EC2_METADATA_DISABLED", "true");
        // Every run logs at debug level, so the secret scan below covers it too.
        command.env("RUNNER_DEBUG", "1");
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        if self.in_actions {
            command
                .env("GITHUB_ACTIONS", "true")
                .env("GITHUB_OUTPUT", &output_path)
                .env("GITHUB_STEP_SUMMARY", &summary_path);
            for (name, value) in &self.inputs {
                command.env(format!("INPUT_{}", name.to_ascii_uppercase()), value);
            }
            for (variable, input) in [(TEST_BUILDER, "builder"), (TEST_PUSH_ENGINE, "push-engine")]
            {
                if let (Ok(value), false) =
                    (std::env::var(variable), self.inputs.contains_key(input))
                {
                    command.env(format!("INPUT_{}", input.to_ascii_uppercase()), value);
                }
            }
        }
        let out = command.output().expect("run the action binary");
        let output_file = std::fs::read_to_string(&output_path).unwrap_or_default();
        let result = RunResult {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            outputs: parse_output_file(&output_file),
            output_file,
            summary: std::fs::read_to_string(&summary_path).unwrap_or_default(),
        };
        scan_for_secrets(&result, &self.env);
        attached::scan_attachments_for_secrets(&result, &self.env, &self.inputs);
        result
    }
}

/// Every run of every test passes through here: the registry password and its token may
/// appear only in their `::add-mask::` lines, and the AWS secret key and session token
/// nowhere, in the log, stdout, the outputs file and the summary. Each scanned run is
/// counted in `target/secret-scan.log`, which `scripts/test` reports.
fn scan_for_secrets(run: &RunResult, env: &[(String, String)]) {
    use base64::Engine as _;
    let standin = standin();
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("AWS:{}", standin.password));
    let produced = [&run.stderr, &run.stdout, &run.output_file, &run.summary];
    // Every password the front issues (one per GetAuthorizationToken, renewals included)
    // starts as ECR's do, with a JSON envelope in base64; the token is `AWS:` before it.
    let issued = [
        ISSUED_PASSWORD_PREFIX.to_string(),
        base64::engine::general_purpose::STANDARD.encode(format!("AWS:{ISSUED_PASSWORD_PREFIX}"))
            [..20]
            .to_string(),
    ];
    for text in produced {
        for line in text.lines() {
            if issued.iter().any(|prefix| line.contains(prefix.as_str())) {
                assert!(
                    line.starts_with("::add-mask::"),
                    "an issued registry password leaked in `{line}`:\n{}",
                    run.stderr
                );
            }
        }
    }
    for secret in [&standin.password, &token] {
        for text in produced {
            for line in text.lines().filter(|l| l.contains(secret.as_str())) {
                assert_eq!(
                    line,
                    format!("::add-mask::{secret}"),
                    "the registry password leaked:\n{}",
                    run.stderr
                );
            }
        }
    }
    // A proxy password (and the Basic value that carries it) only in its mask lines.
    for secret in proxy_secrets(env) {
        for text in produced {
            for line in text.lines().filter(|l| l.contains(secret.as_str())) {
                assert!(
                    line.starts_with("::add-mask::"),
                    "a proxy password leaked in `{line}`:\n{}",
                    run.stderr
                );
            }
        }
    }
    for name in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Some((_, value)) = env.iter().find(|(k, _)| k == name) {
            for text in produced {
                assert!(
                    !text.contains(value.as_str()),
                    "{name} leaked:\n{}",
                    run.stderr
                );
            }
        }
    }
    let log = repo_root().join("target/secret-scan.log");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        use std::io::Write as _;
        let _ = writeln!(file, "scanned");
    }
}

/// The passwords in the run's proxy variables, and `user:password` in base64 (what a
/// `Proxy-Authorization` header carries).
pub(crate) fn proxy_secrets(env: &[(String, String)]) -> Vec<String> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for (name, value) in env {
        if !name.eq_ignore_ascii_case("https_proxy") && !name.eq_ignore_ascii_case("http_proxy") {
            continue;
        }
        let after_scheme = value.split_once("://").map_or(value.as_str(), |(_, r)| r);
        if let Some((userinfo, _)) = after_scheme.rsplit_once('@') {
            if let Some((_, password)) = userinfo.split_once(':') {
                if password.len() >= 4 {
                    out.push(password.to_string());
                    out.push(base64::engine::general_purpose::STANDARD.encode(userinfo));
                }
            }
        }
    }
    out
}

/// Parses the runner's `name<<delimiter` format independently of the action's code.
pub fn parse_output_file(text: &str) -> BTreeMap<String, String> {
    let mut outputs = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let (name, delimiter) = line.split_once("<<").expect("heredoc header");
        let mut value = Vec::new();
        for body in lines.by_ref() {
            if body == delimiter {
                break;
            }
            value.push(body);
        }
        outputs.insert(name.to_string(), value.join("\n"));
    }
    outputs
}

/// `docker run --platform` of the pushed index (pulled for that platform first, with
/// the registry's login, and removed again): what the image prints.
pub fn run_platform(reference: &str, platform: &str) -> String {
    let standin = standin();
    let config = tempfile::tempdir().unwrap();
    let login = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf %s \"$PASSWORD\" | docker --config {} login -u AWS --password-stdin {} >/dev/null 2>&1 \
             && docker --config {} pull -q --platform {platform} {reference} >/dev/null",
            config.path().display(),
            standin.registry,
            config.path().display(),
        ))
        .env("PASSWORD", &standin.password)
        .status()
        .expect("docker login and pull");
    assert!(login.success(), "pull {reference} for {platform}");
    let out = docker_output(&["run", "--rm", "--platform", platform, reference]);
    assert!(
        out.status.success(),
        "run {reference} on {platform}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The classic store holds one image per reference: free it for the next platform.
    docker_output(&["rmi", reference]);
    String::from_utf8_lossy(&out.stdout).to_string()
}
