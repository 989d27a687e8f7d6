//! Corporate networks, end to end: the action runs in a network namespace of the test's
//! own, where the stand-in's ECR addresses (registry 127.0.0.2, API 127.0.0.3) cannot be
//! reached directly, so a push succeeds only along the routes the test opens: a real
//! proxy (tinyproxy) whose log shows each `CONNECT`, a gateway that re-signs TLS with a
//! corporate CA, a VPC endpoint address. The failures (wrong proxy password, proxy down
//! or unknown, untrusted CA, an endpoint whose certificate does not fit) each end in one
//! `::error::` before any build, naming what to fix; no proxy password shows anywhere
//! (the secret scan of every run checks that too).

mod support;

use support::network::{corporate_ca, Namespace, Proxy, Serve};
use support::{standin, unique, ActionRun, RunResult, Workspace, BUILD_STARTED};

const REGISTRY_IP: &str = "127.0.0.2";
const API_IP: &str = "127.0.0.3";
const API_HOST: &str = "api.ecr.us-east-1.amazonaws.com";

fn workspace(repo: &str) -> Workspace {
    let ws = Workspace::new();
    ws.write(
        "Dockerfile",
        "FROM local/busybox:latest\nCOPY payload.txt /\n",
    )
    .write("payload.txt", &format!("{repo}\n{}", "p".repeat(100_000)));
    ws
}

/// The action for `repo` inside `ns`, direct push, retries without delays.
fn action(ns: &Namespace, ws: &Workspace, repo: &str) -> ActionRun {
    ns.wrap(standin().action(ws.path()))
        .input("repository", repo)
        .input("push-engine", "direct")
        .env("ECR_BUILD_PUSH_NO_RETRY_DELAY", "1")
}

fn assert_pushed(run: &RunResult, repo: &str) {
    run.assert_success();
    assert_eq!(
        standin().registry_digest(repo, "latest").as_deref(),
        Some(run.output("image-digest")),
        "{}",
        run.stderr
    );
}

/// A namespace that reaches only the proxy (forwarded at its host address).
fn behind_proxy(proxy: &Proxy) -> Namespace {
    let mut ns = Namespace::new();
    ns.forward("127.0.0.1", proxy.port, &Serve::Plain);
    ns
}

/// Fails before any build, with exactly one `::error::`, which contains every `needle`.
fn assert_one_error(run: &RunResult, needles: &[&str]) {
    run.assert_one_error(needles);
    assert!(
        !run.stderr.contains(BUILD_STARTED),
        "a build began:\n{}",
        run.stderr
    );
}

/// Without any direct route, the whole push (token, repository, blobs, manifest,
/// confirmation) goes through `HTTPS_PROXY`, and the proxy logged CONNECTs to both hosts.
/// The same namespace without the proxy variable cannot push at all.
#[test]
fn the_whole_push_goes_through_the_proxy() {
    let standin = standin();
    let repo = unique("proxy/all");
    let proxy = Proxy::start(None);
    let ns = behind_proxy(&proxy);
    let ws = workspace(&repo);
    let run = action(&ns, &ws, &repo)
        .env("HTTPS_PROXY", &format!("http://127.0.0.1:{}", proxy.port))
        .run();
    assert_pushed(&run, &repo);
    let connects = proxy.connects();
    assert!(
        connects.contains(&format!("{}:443", standin.registry)),
        "{}",
        proxy.log()
    );
    assert!(
        connects.contains(&format!("{API_HOST}:443")),
        "{}",
        proxy.log()
    );

    let direct = action(&ns, &ws, &unique("proxy/none")).run();
    assert!(
        !direct.success,
        "pushed without the proxy:\n{}",
        direct.stderr
    );
}

/// `no_proxy` (lower case, as curl reads it) naming the registry host: the registry is
/// reached directly (a route the test opens), the API still through the proxy.
#[test]
fn no_proxy_naming_the_registry_sends_only_the_api_through_the_proxy() {
    let standin = standin();
    let repo = unique("proxy/noproxy");
    let proxy = Proxy::start(None);
    let mut ns = behind_proxy(&proxy);
    ns.forward(REGISTRY_IP, 443, &Serve::Plain);
    let run = action(&ns, &workspace(&repo), &repo)
        .env("https_proxy", &format!("http://127.0.0.1:{}", proxy.port))
        .env("no_proxy", &format!("localhost,{}", standin.registry))
        .run();
    assert_pushed(&run, &repo);
    let connects = proxy.connects();
    assert!(
        connects.contains(&format!("{API_HOST}:443")),
        "{}",
        proxy.log()
    );
    assert!(
        !connects.iter().any(|c| c.starts_with(&standin.registry)),
        "registry traffic went through the proxy: {connects:?}"
    );
}

/// A proxy asking for Basic authentication: the credentials in the URL pass, and the
/// password (even at trace level) appears only in the runner's mask lines.
#[test]
fn proxy_credentials_in_the_url_authenticate_and_are_masked() {
    let repo = unique("proxy/auth");
    let password = "pr0xy-Pa55-word";
    let proxy = Proxy::start(Some(("ci-bot", password)));
    let ns = behind_proxy(&proxy);
    let run = action(&ns, &workspace(&repo), &repo)
        .env(
            "HTTPS_PROXY",
            &format!("http://ci-bot:{password}@127.0.0.1:{}", proxy.port),
        )
        .env("ECR_BUILD_PUSH_LOG", "trace")
        .run();
    assert_pushed(&run, &repo);
    assert!(
        run.stdout.contains(&format!("::add-mask::{password}"))
            || run.stderr.contains(&format!("::add-mask::{password}")),
        "the proxy password was not masked"
    );
    assert!(
        run.stderr.contains("ci-bot:***@127.0.0.1"),
        "{}",
        run.stderr
    );
    assert!(proxy.connects().len() >= 2, "{}", proxy.log());
}

/// Wrong proxy credentials, and none at all where the proxy wants them: one error before
/// the build, naming the proxy (password masked) and the host it was asked for.
#[test]
fn wrong_or_missing_proxy_credentials_fail_before_the_build() {
    let repo = unique("proxy/badauth");
    let proxy = Proxy::start(Some(("ci-bot", "right-password")));
    let ns = behind_proxy(&proxy);
    let ws = workspace(&repo);
    let proxy_at = format!("127.0.0.1:{}", proxy.port);
    let wrong = action(&ns, &ws, &repo)
        .env(
            "HTTPS_PROXY",
            &format!("http://ci-bot:wrong-password@{proxy_at}"),
        )
        .run();
    assert_one_error(
        &wrong,
        &[&format!("http://ci-bot:***@{proxy_at}"), API_HOST],
    );
    assert!(!wrong.error_lines()[0].contains("wrong-password"));

    let missing = action(&ns, &ws, &repo)
        .env("HTTPS_PROXY", &format!("http://{proxy_at}"))
        .run();
    assert_one_error(&missing, &[&proxy_at, API_HOST, "407"]);
}

/// A proxy that is down (nothing listens) and one whose name does not resolve: one
/// error each, naming the proxy and the host.
#[test]
fn a_proxy_that_is_down_or_unknown_gives_one_clear_error() {
    let repo = unique("proxy/down");
    let ns = Namespace::new();
    let ws = workspace(&repo);
    let down = action(&ns, &ws, &repo)
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .run();
    assert_one_error(&down, &["http://127.0.0.1:9", API_HOST]);

    let unknown = action(&ns, &ws, &repo)
        .env("HTTPS_PROXY", "http://proxy.corp.invalid:3128")
        .run();
    assert_one_error(&unknown, &["proxy.corp.invalid:3128", API_HOST]);
}

/// A gateway re-signs both hosts' TLS with a corporate CA: with `SSL_CERT_FILE` naming
/// that CA (added to the system store) the push passes through both clients; without
/// it, one error names the host that failed verification and what to set.
#[test]
fn a_corporate_ca_is_trusted_through_ssl_cert_file() {
    let standin = standin();
    let repo = unique("proxy/corpca");
    let (_dir, ca, cert, key) = corporate_ca(&[&standin.registry, API_HOST]);
    let mut ns = Namespace::new();
    let resign = Serve::Resign {
        cert: &cert,
        key: &key,
    };
    ns.forward(REGISTRY_IP, 443, &resign);
    ns.forward(API_IP, 443, &resign);
    let ws = workspace(&repo);
    let trusted = action(&ns, &ws, &repo)
        .env("SSL_CERT_FILE", &ca.to_string_lossy())
        .run();
    assert_pushed(&trusted, &repo);

    let untrusted = action(&ns, &ws, &repo).run();
    assert_one_error(&untrusted, &[API_HOST, "UnknownIssuer", "SSL_CERT_FILE"]);
}

/// A `dkr` VPC endpoint without private DNS: with `registry-endpoint` the registry's
/// traffic goes to the endpoint's address (the only route to the registry) while TLS
/// verifies the registry's own name, and the API is reached at a `vpce-` endpoint name
/// through `AWS_ENDPOINT_URL_ECR`. An endpoint whose certificate does not cover the
/// registry host fails before the build, saying what to set.
#[test]
fn registry_endpoint_and_a_vpce_api_endpoint_carry_the_push() {
    let standin = standin();
    let repo = unique("proxy/vpce");
    let vpce_ip = standin.var("STANDIN_VPCE_DKR_IP");
    let vpce_dkr = standin.var("STANDIN_VPCE_DKR_HOST");
    let vpce_api = standin.var("STANDIN_VPCE_API_HOST");
    let mut ns = Namespace::new();
    ns.forward(API_IP, 443, &Serve::Plain);
    ns.forward_to(&vpce_ip, 443, REGISTRY_IP, &Serve::Plain);
    let ws = workspace(&repo);
    let run = action(&ns, &ws, &repo)
        .input("registry-endpoint", &vpce_dkr)
        .env("AWS_ENDPOINT_URL_ECR", &format!("https://{vpce_api}"))
        .run();
    assert_pushed(&run, &repo);

    let without = action(&ns, &ws, &repo)
        .env("AWS_ENDPOINT_URL_ECR", &format!("https://{vpce_api}"))
        .run();
    assert_one_error(&without, &[&standin.registry]);

    // An endpoint presenting a certificate for its own name only.
    let (_dir, ca, cert, key) = corporate_ca(&[&vpce_dkr]);
    let mut other = Namespace::new();
    other.forward(API_IP, 443, &Serve::Plain);
    other.forward_to(
        &vpce_ip,
        443,
        REGISTRY_IP,
        &Serve::Resign {
            cert: &cert,
            key: &key,
        },
    );
    let misfit = action(&other, &ws, &repo)
        .input("registry-endpoint", &vpce_dkr)
        .env("SSL_CERT_FILE", &ca.to_string_lossy())
        .run();
    assert_one_error(&misfit, &[&vpce_dkr, "does not cover", "private DNS"]);
}

/// Blob reads the registry redirects (to S3's stand-in on the API host, as ECR does)
/// take the proxy too: the direct push reads the base image's config, in the registry,
/// through a redirect, from a namespace where only the proxy reaches either host, and
/// the redirect was followed (the fault was consumed).
#[test]
fn redirected_blob_reads_go_through_the_proxy() {
    let standin = standin();
    let source = unique("proxy/base");
    standin.create_repository(&source, "MUTABLE");
    let base = format!("{}/{source}:base", standin.registry);
    support::docker(&["tag", "local/busybox:latest", &base]);
    standin.docker_push(&base);
    let config = support::docker(&["image", "inspect", "--format", "{{.Id}}", &base]);
    let path = format!("/v2/{source}/blobs/{}", config.trim());
    standin.inject_fault(
        &serde_json::json!({"route": "registry", "mode": "redirect", "method": "GET",
                            "path": path}),
    );
    let repo = unique("proxy/redirect");
    let proxy = Proxy::start(None);
    let ns = behind_proxy(&proxy);
    let ws = workspace(&repo);
    ws.write("Dockerfile", &format!("FROM {base}\nCOPY payload.txt /\n"));
    // The classic builder uses the local base as it is, so only the push reads the config.
    let run = action(&ns, &ws, &repo)
        .input("builder", "classic")
        .env("HTTPS_PROXY", &format!("http://127.0.0.1:{}", proxy.port))
        .run();
    assert_pushed(&run, &repo);
    let faults = std::process::Command::new("curl")
        .args([
            "-sSf",
            &format!("{}/faults", standin.var("STANDIN_FAULTS_URL")),
        ])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&faults.stdout).unwrap();
    let pending = state["pending"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"].as_str() == Some(path.as_str()))
        .count();
    assert_eq!(
        pending, 0,
        "the config was not read through the redirect:\n{}",
        run.stderr
    );
    support::docker(&["rmi", &base]);
}

/// An `http://` API endpoint (moto's own port) takes `HTTP_PROXY` (sent in absolute
/// form, as plain HTTP proxying is), while the registry keeps taking `HTTPS_PROXY`:
/// from a namespace that reaches neither directly, the push passes, and the proxy logged
/// both the API's requests and the registry's CONNECT.
#[test]
fn a_plain_http_api_endpoint_takes_http_proxy() {
    let standin = standin();
    let repo = unique("proxy/plain");
    let proxy = Proxy::start(None);
    let ns = behind_proxy(&proxy);
    let via = format!("http://127.0.0.1:{}", proxy.port);
    let run = action(&ns, &workspace(&repo), &repo)
        .env("AWS_ENDPOINT_URL_ECR", &standin.moto_url)
        .env("HTTP_PROXY", &via)
        .env("HTTPS_PROXY", &via)
        .run();
    assert_pushed(&run, &repo);
    let log = proxy.log();
    assert!(
        log.contains(&format!("POST {}/", standin.moto_url)),
        "no API request through the proxy:\n{log}"
    );
    assert!(
        proxy
            .connects()
            .contains(&format!("{}:443", standin.registry)),
        "{log}"
    );
}
