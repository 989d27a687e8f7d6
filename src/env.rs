//! Every environment variable the action reads itself, listed once and read in one place.
//!
//! `main` captures the process environment into [`Environment`] at start-up; everything
//! below takes the values it needs as arguments, so tests never touch the process
//! environment. Two libraries read further variables on their own, by design: aws-config
//! (the standard `AWS_*` settings, e.g. `AWS_REGION`, `AWS_PROFILE`,
//! `AWS_ENDPOINT_URL_ECR`, `AWS_MAX_ATTEMPTS`) and bollard (`DOCKER_HOST`,
//! `DOCKER_CERT_PATH`, `DOCKER_TLS_VERIFY`). The proxy and CA variables are read here
//! only: both HTTP clients are built from them (`network`), never from the environment.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::network::stall::StallTimeout;

/// Prefix of the variables the runner sets for each input (`INPUT_BUILD-ARGS` for
/// `build-args`: upper-cased, hyphens kept).
pub const INPUT_PREFIX: &str = "INPUT_";
/// Set to `true` by GitHub's runner (and by act) for every step.
pub const GITHUB_ACTIONS: &str = "GITHUB_ACTIONS";
/// File that receives step outputs, in the runner's `name<<delimiter` format.
pub const GITHUB_OUTPUT: &str = "GITHUB_OUTPUT";
/// File that receives the Markdown job summary.
pub const GITHUB_STEP_SUMMARY: &str = "GITHUB_STEP_SUMMARY";
/// `1` when the workflow runs with debug logging enabled.
pub const RUNNER_DEBUG: &str = "RUNNER_DEBUG";
/// Log filter in `tracing` syntax (e.g. `debug`, `ecr_build_push=trace`); overrides the
/// level chosen from `RUNNER_DEBUG`.
pub const LOG_FILTER: &str = "ECR_BUILD_PUSH_LOG";
/// Where the Docker daemon listens: `unix:///path` (default `/var/run/docker.sock`),
/// `tcp://host:port` or `http://`, with TLS when `DOCKER_TLS_VERIFY` is set.
pub const DOCKER_HOST: &str = "DOCKER_HOST";
/// Set (to anything) to use TLS for `tcp://` hosts, with the client certificate from
/// `DOCKER_CERT_PATH`.
pub const DOCKER_TLS_VERIFY: &str = "DOCKER_TLS_VERIFY";
/// Folder holding `ca.pem`, `cert.pem` and `key.pem` for TLS; default `~/.docker`.
pub const DOCKER_CERT_PATH: &str = "DOCKER_CERT_PATH";
/// Home folder, for the default `DOCKER_CERT_PATH`.
pub const HOME: &str = "HOME";
/// The ECR API endpoint override, read by aws-config; read here too, for messages.
pub const AWS_ENDPOINT_URL_ECR: &str = "AWS_ENDPOINT_URL_ECR";
/// The KMS API endpoint override (`sign: kms`), read by aws-config; read here too, for
/// messages.
pub const AWS_ENDPOINT_URL_KMS: &str = "AWS_ENDPOINT_URL_KMS";
/// The ECR Public API endpoint override (`src/ecr/public.rs`), read by aws-config and
/// here, where it is passed to the ECR Public client and named in messages. Unset: the
/// SDK's own endpoint in us-east-1, the only region ECR Public's API is in.
pub const AWS_ENDPOINT_URL_ECR_PUBLIC: &str = "AWS_ENDPOINT_URL_ECR_PUBLIC";
/// The endpoint override for every AWS service, read by aws-config.
pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
/// Proxy for `https://` connections (the ECR API, the registry, S3): `http://[user:pass@]host:port`.
/// The lowercase `https_proxy` wins when both are set, as with curl and the AWS CLI.
pub const HTTPS_PROXY: &str = "HTTPS_PROXY";
/// Lowercase form of [`HTTPS_PROXY`]; wins over it.
pub const HTTPS_PROXY_LOWER: &str = "https_proxy";
/// Proxy for plain `http://` connections (an `http://` ECR endpoint override only).
pub const HTTP_PROXY: &str = "HTTP_PROXY";
/// Lowercase form of [`HTTP_PROXY`]; wins over it.
pub const HTTP_PROXY_LOWER: &str = "http_proxy";
/// Hosts reached without the proxy: names, `.domain` suffixes, IPs, CIDRs, `*`.
pub const NO_PROXY: &str = "NO_PROXY";
/// Lowercase form of [`NO_PROXY`]; wins over it.
pub const NO_PROXY_LOWER: &str = "no_proxy";
/// A PEM bundle of CA certificates added to the system store (a corporate CA), for both
/// HTTP clients.
pub const SSL_CERT_FILE: &str = "SSL_CERT_FILE";
/// The AWS CLI's name for the same: a PEM bundle added to the system store, for both
/// HTTP clients.
pub const AWS_CA_BUNDLE: &str = "AWS_CA_BUNDLE";
/// The GitHub context the runner passes to every step, for tag templates and OCI labels
/// ([`GitHubContext`]). `refs/heads/main`, `refs/tags/v1.2.3`, `refs/pull/7/merge`.
pub const GITHUB_REF: &str = "GITHUB_REF";
/// The short ref name: `main`, `v1.2.3`, `7/merge`.
pub const GITHUB_REF_NAME: &str = "GITHUB_REF_NAME";
/// `branch` or `tag`.
pub const GITHUB_REF_TYPE: &str = "GITHUB_REF_TYPE";
/// The commit the workflow runs on (for a pull request, the merge commit).
pub const GITHUB_SHA: &str = "GITHUB_SHA";
/// `push`, `pull_request`, `release`, `workflow_dispatch`, `schedule`…
pub const GITHUB_EVENT_NAME: &str = "GITHUB_EVENT_NAME";
/// The event's JSON payload (a pull request's head commit and branch are there).
pub const GITHUB_EVENT_PATH: &str = "GITHUB_EVENT_PATH";
/// The workflow's run number, counting from 1.
pub const GITHUB_RUN_NUMBER: &str = "GITHUB_RUN_NUMBER";
/// The workflow run's ID, the same in every job and matrix leg of the run, and across
/// its re-runs: with `GITHUB_JOB`, what identifies a distributed build's legs.
pub const GITHUB_RUN_ID: &str = "GITHUB_RUN_ID";
/// Which attempt of the run this is: 1, then 2 for "Re-run failed jobs", and so on.
pub const GITHUB_RUN_ATTEMPT: &str = "GITHUB_RUN_ATTEMPT";
/// The job's ID in the workflow (the same in every leg of a matrix).
pub const GITHUB_JOB: &str = "GITHUB_JOB";
/// The runner's name and architecture (`X64`, `ARM64`), for the summary of a
/// distributed build.
pub const RUNNER_NAME: &str = "RUNNER_NAME";
pub const RUNNER_ARCH: &str = "RUNNER_ARCH";
/// A pull request's head branch (pull request events only).
pub const GITHUB_HEAD_REF: &str = "GITHUB_HEAD_REF";
/// `https://github.com`, or the GitHub Enterprise server.
pub const GITHUB_SERVER_URL: &str = "GITHUB_SERVER_URL";
/// `owner/name` of the repository the workflow runs in.
pub const GITHUB_REPOSITORY: &str = "GITHUB_REPOSITORY";
/// The workflow file and the ref it ran from, `owner/name/.github/workflows/x.yml@refs/heads/main`:
/// the provenance's builder.
pub const GITHUB_WORKFLOW_REF: &str = "GITHUB_WORKFLOW_REF";
/// The commit of that workflow file.
pub const GITHUB_WORKFLOW_SHA: &str = "GITHUB_WORKFLOW_SHA";
/// `github-hosted` or `self-hosted`, for the provenance.
pub const RUNNER_ENVIRONMENT: &str = "RUNNER_ENVIRONMENT";
/// Seconds since the epoch for `org.opencontainers.image.created`, for reproducible
/// builds (<https://reproducible-builds.org/specs/source-date-epoch/>).
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
/// Where the direct push spools compressed layers (unlinked files, as large as the
/// largest compressed layer), so a lost upload session can start again; `/tmp` if unset.
pub const TMPDIR: &str = "TMPDIR";
/// The spool folder when `TMPDIR` is unset.
pub const DEFAULT_SPOOL_DIR: &str = "/tmp";
/// Test switch: when `1`, retry delays are zero, so tests of the retry paths run fast.
pub const NO_RETRY_DELAY: &str = "ECR_BUILD_PUSH_NO_RETRY_DELAY";
/// How long a connection may move nothing before the action gives up on it; default 5
/// minutes ([`StallTimeout::DEFAULT`]). Seconds (`300`) or a duration as `scan-timeout`
/// takes it (`30s`, `5m`, `1m30s`), at most a day. It bounds what has no useful total
/// limit: a layer's upload that the registry (or a proxy) stopped reading, a blob or
/// manifest read that stopped coming, the Docker daemon's push progress and image export
/// (from its first byte on the classic store, which writes the whole export to disk
/// first), and a BuildKit build whose daemon neither reports progress nor checks its
/// session (every 5 s), never less than 15 s there. The classic builder's output is not
/// watched: a quiet `RUN` step sends nothing. Calls to the daemon that only ask or set
/// something (`docker info`, inspect, tag) are bounded by 30 s, or by this when shorter.
pub const STALL_TIMEOUT: &str = "ECR_BUILD_PUSH_STALL_TIMEOUT";

/// The environment as the action sees it, captured once.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// Raw input values keyed by input name as written in `action.yml` (lower case),
    /// from `INPUT_*` variables.
    pub inputs: BTreeMap<String, String>,
    /// Running under a GitHub Actions runner (or act).
    pub in_actions: bool,
    pub output_file: Option<PathBuf>,
    pub summary_file: Option<PathBuf>,
    pub runner_debug: bool,
    pub log_filter: Option<String>,
    pub no_retry_delay: bool,
    /// `TMPDIR`, else [`DEFAULT_SPOOL_DIR`].
    pub spool_dir: PathBuf,
    pub docker: DockerEnv,
    /// `AWS_ENDPOINT_URL_ECR`, else `AWS_ENDPOINT_URL`: where the ECR API is, for messages.
    pub ecr_endpoint: Option<String>,
    /// `AWS_ENDPOINT_URL_KMS`, else `AWS_ENDPOINT_URL`: where the KMS API is, for messages.
    pub kms_endpoint: Option<String>,
    /// `AWS_ENDPOINT_URL_ECR_PUBLIC`, else `AWS_ENDPOINT_URL`: where the ECR Public API
    /// is ([`crate::ecr::Ecr::public`]).
    pub ecr_public_endpoint: Option<String>,
    pub network: NetworkEnv,
    /// The GitHub context, for tag templates and labels.
    pub github: GitHubContext,
    /// Every other variable, for `secrets: id=NAME,env=VAR` only.
    pub secret_vars: SecretVars,
    /// Variables set to what the action cannot use ([`Environment::check`]); each then
    /// reads as unset.
    pub invalid: Vec<InvalidVariable>,
}

/// A variable the action reads, set to a value it cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value `{value}` for {name}: {reason}")]
pub struct InvalidVariable {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// The rest of the environment, which build secrets may name. `Debug` shows no values.
#[derive(Clone, Default)]
pub struct SecretVars(BTreeMap<String, String>);

impl SecretVars {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

impl std::fmt::Debug for SecretVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretVars({} variables)", self.0.len())
    }
}

/// The `GITHUB_*` variables tag templates and labels use, as the runner set them; empty
/// ones are `None`. The event payload file is read by `metadata::Context::load`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitHubContext {
    pub git_ref: Option<String>,
    pub ref_name: Option<String>,
    pub ref_type: Option<String>,
    pub sha: Option<String>,
    pub event_name: Option<String>,
    pub event_path: Option<PathBuf>,
    pub run_number: Option<String>,
    pub run_id: Option<String>,
    pub run_attempt: Option<String>,
    pub job: Option<String>,
    pub runner_name: Option<String>,
    pub runner_arch: Option<String>,
    pub head_ref: Option<String>,
    pub server_url: Option<String>,
    pub repository: Option<String>,
    pub workflow_ref: Option<String>,
    pub workflow_sha: Option<String>,
    pub runner_environment: Option<String>,
    /// `SOURCE_DATE_EPOCH`, unparsed.
    pub source_date_epoch: Option<String>,
}

/// How to reach the Docker daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerEnv {
    pub host: Option<String>,
    pub tls_verify: bool,
    pub cert_path: Option<PathBuf>,
    /// [`STALL_TIMEOUT`], for the engine's long transfers and its control calls' bound.
    pub stall_timeout: StallTimeout,
}

/// Proxy and trust settings as set (`src/network` validates them). `Debug` shows which
/// are set, never a value: proxy URLs may carry a password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NetworkEnv {
    pub https_proxy: Option<String>,
    pub http_proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub ssl_cert_file: Option<PathBuf>,
    pub aws_ca_bundle: Option<PathBuf>,
    /// [`STALL_TIMEOUT`], for the registry client (the same value as
    /// [`DockerEnv::stall_timeout`]: each client takes it from the settings it is built
    /// from).
    pub stall_timeout: StallTimeout,
}

impl std::fmt::Debug for NetworkEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkEnv")
            .field("https_proxy", &self.https_proxy.as_ref().map(|_| "<set>"))
            .field("http_proxy", &self.http_proxy.as_ref().map(|_| "<set>"))
            .field("no_proxy", &self.no_proxy)
            .field("ssl_cert_file", &self.ssl_cert_file)
            .field("aws_ca_bundle", &self.aws_ca_bundle)
            .field("stall_timeout", &self.stall_timeout)
            .finish()
    }
}

impl Environment {
    /// Captures the variables above from an iterator of `(name, value)` pairs, e.g.
    /// `std::env::vars_os()` converted lossily.
    pub fn capture(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut env = Self::default();
        let mut home = None;
        let mut spool_dir = None;
        let mut global_endpoint = None;
        let mut stall_timeout = StallTimeout::DEFAULT;
        // (upper case, lower case) of each proxy variable; lower case wins.
        let (mut https, mut http, mut no) = ((None, None), (None, None), (None, None));
        for (name, value) in vars {
            if let Some(input) = name.strip_prefix(INPUT_PREFIX) {
                // The runner upper-cases input names; action.yml names are lower case.
                env.inputs.insert(input.to_ascii_lowercase(), value);
                continue;
            }
            let non_empty = || (!value.is_empty()).then(|| value.clone());
            match name.as_str() {
                GITHUB_ACTIONS => env.in_actions = value == "true",
                GITHUB_OUTPUT => env.output_file = non_empty().map(PathBuf::from),
                GITHUB_STEP_SUMMARY => env.summary_file = non_empty().map(PathBuf::from),
                RUNNER_DEBUG => env.runner_debug = value == "1",
                LOG_FILTER => env.log_filter = non_empty(),
                NO_RETRY_DELAY => env.no_retry_delay = value == "1",
                STALL_TIMEOUT => match parse_stall_timeout(&value) {
                    _ if value.is_empty() => {}
                    Ok(limit) => stall_timeout = limit,
                    Err(reason) => env.invalid.push(InvalidVariable {
                        name: STALL_TIMEOUT,
                        value,
                        reason,
                    }),
                },
                TMPDIR => spool_dir = non_empty().map(PathBuf::from),
                DOCKER_HOST => env.docker.host = non_empty(),
                DOCKER_TLS_VERIFY => env.docker.tls_verify = !value.is_empty(),
                DOCKER_CERT_PATH => env.docker.cert_path = non_empty().map(PathBuf::from),
                HOME => home = non_empty().map(PathBuf::from),
                AWS_ENDPOINT_URL_ECR => env.ecr_endpoint = non_empty(),
                AWS_ENDPOINT_URL_KMS => env.kms_endpoint = non_empty(),
                AWS_ENDPOINT_URL_ECR_PUBLIC => env.ecr_public_endpoint = non_empty(),
                AWS_ENDPOINT_URL => global_endpoint = non_empty(),
                HTTPS_PROXY => https.0 = non_empty(),
                HTTPS_PROXY_LOWER => https.1 = non_empty(),
                HTTP_PROXY => http.0 = non_empty(),
                HTTP_PROXY_LOWER => http.1 = non_empty(),
                NO_PROXY => no.0 = non_empty(),
                NO_PROXY_LOWER => no.1 = non_empty(),
                SSL_CERT_FILE => env.network.ssl_cert_file = non_empty().map(PathBuf::from),
                AWS_CA_BUNDLE => env.network.aws_ca_bundle = non_empty().map(PathBuf::from),
                GITHUB_REF => env.github.git_ref = non_empty(),
                GITHUB_REF_NAME => env.github.ref_name = non_empty(),
                GITHUB_REF_TYPE => env.github.ref_type = non_empty(),
                GITHUB_SHA => env.github.sha = non_empty(),
                GITHUB_EVENT_NAME => env.github.event_name = non_empty(),
                GITHUB_EVENT_PATH => env.github.event_path = non_empty().map(PathBuf::from),
                GITHUB_RUN_NUMBER => env.github.run_number = non_empty(),
                GITHUB_RUN_ID => env.github.run_id = non_empty(),
                GITHUB_RUN_ATTEMPT => env.github.run_attempt = non_empty(),
                GITHUB_JOB => env.github.job = non_empty(),
                RUNNER_NAME => env.github.runner_name = non_empty(),
                RUNNER_ARCH => env.github.runner_arch = non_empty(),
                GITHUB_HEAD_REF => env.github.head_ref = non_empty(),
                GITHUB_SERVER_URL => env.github.server_url = non_empty(),
                GITHUB_WORKFLOW_REF => env.github.workflow_ref = non_empty(),
                GITHUB_WORKFLOW_SHA => env.github.workflow_sha = non_empty(),
                RUNNER_ENVIRONMENT => env.github.runner_environment = non_empty(),
                GITHUB_REPOSITORY => env.github.repository = non_empty(),
                SOURCE_DATE_EPOCH => env.github.source_date_epoch = non_empty(),
                _ => {
                    env.secret_vars.0.insert(name, value);
                }
            }
        }
        env.spool_dir = spool_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL_DIR));
        env.docker.stall_timeout = stall_timeout;
        env.network.stall_timeout = stall_timeout;
        env.network.https_proxy = https.1.or(https.0);
        env.network.http_proxy = http.1.or(http.0);
        env.network.no_proxy = no.1.or(no.0);
        if env.kms_endpoint.is_none() {
            env.kms_endpoint.clone_from(&global_endpoint);
        }
        if env.ecr_public_endpoint.is_none() {
            env.ecr_public_endpoint.clone_from(&global_endpoint);
        }
        if env.ecr_endpoint.is_none() {
            env.ecr_endpoint = global_endpoint;
        }
        if env.docker.cert_path.is_none() {
            env.docker.cert_path = home.map(|h| h.join(".docker"));
        }
        env
    }

    /// The first variable set to a value the action cannot use, if any: `main` fails on
    /// it before anything else.
    pub fn check(&self) -> Result<(), InvalidVariable> {
        self.invalid.first().cloned().map_or(Ok(()), Err)
    }

    /// Reads the process environment. Only `main` calls this.
    pub fn from_process() -> Self {
        Self::capture(std::env::vars_os().map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        }))
    }
}

/// [`STALL_TIMEOUT`]'s value: a number of seconds, or a duration as `scan-timeout` takes
/// it ([`crate::inputs::validate::duration`]).
pub fn parse_stall_timeout(value: &str) -> Result<StallTimeout, String> {
    let value = value.trim();
    let seconds = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    let duration = if seconds {
        crate::inputs::validate::duration(&format!("{value}s"))
    } else {
        crate::inputs::validate::duration(value)
    };
    duration
        .map(StallTimeout::new)
        .map_err(|reason| format!("{reason}, or a number of seconds such as `300`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ECR Public's endpoint override is its own variable, else the global one, and is
    /// not taken for private ECR's (nor the reverse).
    #[test]
    fn the_ecr_public_endpoint_falls_back_to_the_global_override() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let env = Environment::capture([
            pair(AWS_ENDPOINT_URL_ECR_PUBLIC, "https://public.example"),
            pair(AWS_ENDPOINT_URL_ECR, "https://private.example"),
        ]);
        assert_eq!(
            env.ecr_public_endpoint.as_deref(),
            Some("https://public.example")
        );
        assert_eq!(env.ecr_endpoint.as_deref(), Some("https://private.example"));
        let env = Environment::capture([pair(AWS_ENDPOINT_URL, "http://127.0.0.1:4566")]);
        assert_eq!(
            env.ecr_public_endpoint.as_deref(),
            Some("http://127.0.0.1:4566")
        );
        let env = Environment::capture([pair(AWS_ENDPOINT_URL_ECR, "https://private.example")]);
        assert_eq!(env.ecr_public_endpoint, None);
    }

    /// The runner keeps hyphens and upper-cases names: `INPUT_BUILD-ARGS` is `build-args`.
    #[test]
    fn input_variables_keep_hyphens_and_are_lowercased() {
        let env = Environment::capture([
            ("INPUT_BUILD-ARGS".to_string(), "A=1".to_string()),
            ("INPUT_REPOSITORY".to_string(), "app".to_string()),
            ("GITHUB_ACTIONS".to_string(), "true".to_string()),
            ("GITHUB_OUTPUT".to_string(), "/tmp/out".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
        ]);
        assert_eq!(env.inputs["build-args"], "A=1");
        assert_eq!(env.inputs["repository"], "app");
        assert_eq!(env.inputs.len(), 2);
        assert!(env.in_actions);
        assert_eq!(env.output_file, Some(PathBuf::from("/tmp/out")));
    }

    /// curl and the AWS CLI let `https_proxy` win over `HTTPS_PROXY`; so does the action,
    /// and neither reaches the secrets' variables.
    #[test]
    fn lowercase_proxy_variables_win() {
        let env = Environment::capture(
            [
                ("HTTPS_PROXY", "http://upper:3128"),
                ("https_proxy", "http://lower:3128"),
                ("NO_PROXY", ".amazonaws.com"),
                ("http_proxy", "http://plain:3128"),
                ("SSL_CERT_FILE", "/corp.pem"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        assert_eq!(
            env.network.https_proxy.as_deref(),
            Some("http://lower:3128")
        );
        assert_eq!(env.network.http_proxy.as_deref(), Some("http://plain:3128"));
        assert_eq!(env.network.no_proxy.as_deref(), Some(".amazonaws.com"));
        assert_eq!(env.network.ssl_cert_file, Some(PathBuf::from("/corp.pem")));
        assert!(env.secret_vars.get("HTTPS_PROXY").is_none());
    }

    /// The stall timeout takes seconds or a duration, reaches both clients, and a value
    /// it cannot use is kept to fail on (named, with the value and what is expected),
    /// leaving the default in place.
    #[test]
    fn the_stall_timeout_takes_seconds_or_a_duration() {
        let limit = |text: &str| parse_stall_timeout(text).map(|t| t.get().as_secs());
        assert_eq!(limit("300"), Ok(300));
        assert_eq!(limit(" 30s "), Ok(30));
        assert_eq!(limit("5m"), Ok(300));
        assert_eq!(limit("1m30s"), Ok(90));
        for bad in ["0", "0s", "x", "5 min", "-1", "25h", "1.5m"] {
            assert!(limit(bad).is_err(), "{bad}");
        }

        let env = Environment::capture([(STALL_TIMEOUT.to_string(), "2s".to_string())]);
        assert_eq!(env.docker.stall_timeout.get().as_secs(), 2);
        assert_eq!(env.network.stall_timeout, env.docker.stall_timeout);
        assert!(env.check().is_ok());
        assert_eq!(
            Environment::capture([]).docker.stall_timeout,
            StallTimeout::DEFAULT
        );

        let env = Environment::capture([(STALL_TIMEOUT.to_string(), "x".to_string())]);
        let err = env.check().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "invalid value `x` for ECR_BUILD_PUSH_STALL_TIMEOUT: expected a duration"
            ) && err.ends_with("or a number of seconds such as `300`"),
            "{err}"
        );
        assert_eq!(env.network.stall_timeout, StallTimeout::DEFAULT);
        assert!(env.secret_vars.get(STALL_TIMEOUT).is_none());
    }
}
